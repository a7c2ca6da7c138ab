"""Whose fault: user errors (InputError, ConfigError) exit 2; a bug in tensorslim, a bare ValueError from NumPy
included, exits 3 with a message that asks for a report, and ``--debug`` shows its traceback."""

from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from models import cli, mlp_model
from tensorslim.commands import build_app
from tensorslim.errors import ConfigError, InputError


def _numpy_bug(a: np.ndarray, b: np.ndarray) -> float:
    """What a shape bug in a pass looks like: NumPy's own ValueError from deep inside the pass."""
    return float(np.broadcast_to(a, (3, *a.shape, 7)).sum())


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import tensorslim.passes.dynamic_quant as dq

    monkeypatch.setattr(dq, "sqnr_db", _numpy_bug)  # the dynamic pass's per-weight SQNR, called for every weight
    onnx.save(mlp_model()[0], tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


def test_an_internal_value_error_in_a_pass_is_exit_3_and_asks_for_a_report(model: Path, tmp_path: Path) -> None:
    before = model.read_bytes()
    r = cli("quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--no-check-speed")
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err.startswith("error: internal error: ValueError:") and "\n" not in err, err
    assert "rerun with --debug and report it" in err and "Traceback" not in err
    assert not (tmp_path / "q.onnx").exists() and model.read_bytes() == before


def test_debug_shows_the_traceback_of_an_internal_error(model: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(build_app(), ["--debug", "quantize", str(model), "-o", str(tmp_path / "q.onnx"),
                                         "--no-check-speed"])  # fmt: skip
    assert isinstance(r.exception, ValueError) and not isinstance(r.exception, InputError)
    assert r.exc_info is not None
    tb = "".join(traceback.format_exception(*r.exc_info))
    assert "_numpy_bug" in tb and "broadcast" in tb
    assert not (tmp_path / "q.onnx").exists()


def test_a_config_value_the_user_chose_is_a_config_error_naming_its_field() -> None:
    from tensorslim.passes.blockwise_quant import BlockQuantConfig
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig
    from tensorslim.passes.prune import PruneConfig

    for build, field in ((lambda: DynamicQuantConfig(form="int3"), "form"),  # type: ignore[arg-type]
                         (lambda: BlockQuantConfig(bits=3), "bits"),
                         (lambda: PruneConfig(sparsity=1.5), "sparsity"),
                         (lambda: DynamicQuantConfig(exclude=("(",)), "exclude")):  # fmt: skip
        with pytest.raises(ConfigError) as e:
            build()
        assert e.value.field == field and str(e.value).startswith(f"{field}:")
        assert isinstance(e.value, ValueError)  # callers that catch ValueError keep working


def test_benchmark_user_errors_are_input_errors(tmp_path: Path) -> None:
    from tensorslim.benchmark import benchmark_models

    with pytest.raises(InputError, match="no such file"):
        benchmark_models([tmp_path / "nope.onnx"], measure_memory=False)
    onnx.save(mlp_model()[0], tmp_path / "m.onnx")
    with pytest.raises(InputError, match="batch_size must be >= 1"):
        benchmark_models([tmp_path / "m.onnx"], batch_size=0, measure_memory=False)


def test_a_bad_search_or_pack_option_is_exit_2(tmp_path: Path) -> None:
    onnx.save(mlp_model()[0], tmp_path / "m.onnx")
    r = cli("pack", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.tslim"), "--level", "30")
    assert r.returncode == 2 and "level: must be an integer from 1 to 22" in r.stderr, r.stderr
    r = cli("optimize", str(tmp_path / "m.onnx"), "--objective", "beauty", "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "objective: 'beauty' is not one of" in r.stderr, r.stderr


def test_a_tensor_whose_bytes_do_not_fit_its_type_is_a_corrupt_file_exit_2(tmp_path: Path) -> None:
    """Found by the fuzzer once a bare ValueError became exit 3: a mutated element type left NumPy to fail."""
    model = mlp_model()[0]
    model.graph.initializer[2].data_type = onnx.TensorProto.FLOAT16  # W2: float32 bytes, now read as float16
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    for args in (("inspect",), ("quantize", "-o", str(tmp_path / "q.onnx"))):
        r = cli(*args, str(tmp_path / "m.onnx"))
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert "tensor 'W2' holds 2,560 bytes, but its shape [10, 64] and type need 1,280" in r.stderr, r.stderr
