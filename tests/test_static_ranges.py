"""``calibration="auto"``: the range set (min/max, percentile, MSE) chosen by the int8 model's measured output SQNR."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from models import run
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.static_quant import AUTO_METHODS, StaticQuantConfig
from tensorslim.pipeline import static_pipeline
from test_static_quant import small_cnn


def per_sample_sqnr(model: onnx.ModelProto, q: onnx.ModelProto, x: np.ndarray) -> float:
    ref, out = run(model, {"x": x})[0], run(q, {"x": x})[0]
    per = [10 * np.log10(np.sum(a.astype(np.float64) ** 2) / np.sum((a - b).astype(np.float64) ** 2))
           for a, b in zip(ref, out, strict=True)]  # fmt: skip
    return float(np.mean(per))


def heavy_tailed_cnn() -> tuple[onnx.ModelProto, Dataset]:
    """Inputs with very heavy tails (sign(x) |x|^4 of Laplace x): clipping the rare huge values pays."""
    model, _ = small_cnn()
    x = np.random.default_rng(1).laplace(size=(48, 3, 16, 16))
    return model, Dataset({"x": (np.sign(x) * np.abs(x) ** 4).astype(np.float32)})


@pytest.mark.parametrize("case, expect", [("heavy-tailed", "mse"), ("gaussian", "minmax")])
def test_auto_ranges_are_the_best_fixed_method_byte_for_byte(case: str, expect: str) -> None:
    model, data = heavy_tailed_cnn() if case == "heavy-tailed" else (small_cnn()[0], small_cnn(seed=2)[1])
    base = dict(latency_check=False, output_sqnr_db=0.0, fallback_sqnr_db=0.0, empirical_bias=False)  # the choice, alone
    auto = static_pipeline(StaticQuantConfig(calibration="auto", **base), data)(model)
    note = next(n for n in auto.notes if n.startswith("activation ranges: "))
    chosen = note.split()[2]
    assert chosen == expect, note  # clipping helps the heavy tails and costs the Gaussian inputs
    fixed = {m: static_pipeline(StaticQuantConfig(calibration=m, **base), data)(model).model for m in AUTO_METHODS}
    # the same bytes as the method it chose, and that method scores best on the samples it was scored on
    assert auto.model.SerializeToString() == fixed[chosen].SerializeToString()
    x = data.inputs["x"][:32]
    scores = {m: per_sample_sqnr(model, q, x) for m, q in fixed.items()}
    assert scores[chosen] >= max(scores.values()) - 1e-6, (chosen, scores)
    for m in AUTO_METHODS:
        assert f"{m} {scores[m]:.1f} dB" in note, (note, scores)


@pytest.mark.parametrize("target", [20.0, 90.0])
def test_the_notes_give_the_written_models_output_sqnr_and_say_when_it_misses_the_target(target: float) -> None:
    """The last accuracy figure is the written model's (empirical bias and every move included), on the samples the
    note names; below ``output_sqnr_db`` it says so and what to try, not just a number."""
    model, data = small_cnn()
    res = static_pipeline(StaticQuantConfig(latency_check=False, output_sqnr_db=target), data)(model)
    (note,) = [n for n in res.notes if n.startswith("accuracy: ")]
    measured = per_sample_sqnr(model, res.model, data.inputs["x"][:8])
    assert f"keeps {measured:.1f} dB of output SQNR against float on 8 calibration sample(s)" in note, (note, measured)
    missed = measured < target
    assert missed == (target == 90.0)  # int8 keeps more than 20 dB on this net and nowhere near 90
    assert ("below the 90 dB" in note and "--int16-nodes" in note and "--range" in note) == missed, note
