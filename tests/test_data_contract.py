"""The data contract (README "Data"): every form of calibration data, on models with a fixed batch of 1, a
scalar input and a batch on axis 1, through the loader, the Python API and the CLI; refusals; hostile files."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from models import F, cli, make, rng, run
from tensorslim.api import load_calibration, quantize
from tensorslim.api.compression import prune
from tensorslim.data import Dataset, layouts
from tensorslim.errors import InputError
from tensorslim.evaluate import evaluate
from tensorslim.passes.float16 import Float16Config
from tensorslim.passes.prune import PruneConfig
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.runtime.ort import OrtRuntime

N = 6  # samples in every form


def fixed_batch_model() -> onnx.ModelProto:
    """x [1, 16, 96] (a fixed batch of 1) -> MatMul -> Relu -> MatMul."""
    r = rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("MatMul", ["a", "W2"], ["y"], name="mm2"),
    ]
    inits = {"W1": r.standard_normal((96, 64)).astype(np.float32), "W2": r.standard_normal((64, 32)).astype(np.float32)}
    return make(nodes, [("x", F, [1, 16, 96])], [("y", F, [1, 16, 32])], inits)


def scalar_model() -> onnx.ModelProto:
    """x [n, 64] and a scalar gain s [] -> MatMul * s -> MatMul."""
    r = rng(1)
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
        helper.make_node("Mul", ["h", "s"], ["hs"], name="gain"),
        helper.make_node("MatMul", ["hs", "W2"], ["y"], name="mm2"),
    ]
    inits = {"W1": r.standard_normal((64, 64)).astype(np.float32), "W2": r.standard_normal((64, 32)).astype(np.float32)}
    return make(nodes, [("x", F, ["n", 64]), ("s", F, [])], [("y", F, ["n", 32])], inits)


def state_model() -> onnx.ModelProto:
    """A GRU-like step: x [batch, 16] and a state h [2, batch, 64] (batch on axis 1) -> new state [2, batch, 64]."""
    r = rng(2)
    nodes = [
        helper.make_node("MatMul", ["x", "Wx"], ["xh"], name="mm_x"),
        helper.make_node("MatMul", ["h", "Wh"], ["hh"], name="mm_h"),
        helper.make_node("Add", ["hh", "xh"], ["z"], name="add"),
        helper.make_node("Tanh", ["z"], ["y"], name="tanh"),
    ]
    inits = {"Wx": r.standard_normal((16, 64)).astype(np.float32), "Wh": r.standard_normal((64, 64)).astype(np.float32)}
    return make(nodes, [("x", F, ["batch", 16]), ("h", F, [2, "batch", 64])], [("y", F, [2, "batch", 64])], inits)


def samples(kind: str) -> dict[str, np.ndarray]:
    """N samples in form (a): along each input's batch axis (``[N]`` for the scalar input)."""
    r = np.random.default_rng(7)
    if kind == "fixed":
        return {"x": r.standard_normal((N, 16, 96)).astype(np.float32)}
    if kind == "scalar":
        return {"x": r.standard_normal((N, 64)).astype(np.float32), "s": r.uniform(0.5, 2, N).astype(np.float32)}
    return {"x": r.standard_normal((N, 16)).astype(np.float32), "h": r.standard_normal((2, N, 64)).astype(np.float32)}


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {"fixed": fixed_batch_model, "scalar": scalar_model,
                                                     "state": state_model}  # fmt: skip


def feeds(kind: str) -> list[dict[str, np.ndarray]]:
    """The same samples as one model feed each (what ONNX Runtime's calibration readers yield)."""
    a = samples(kind)
    if kind == "fixed":
        return [{"x": a["x"][i : i + 1]} for i in range(N)]
    if kind == "scalar":
        return [{"x": a["x"][i : i + 1], "s": a["s"][i]} for i in range(N)]
    return [{"x": a["x"][i : i + 1], "h": a["h"][:, i : i + 1]} for i in range(N)]


def stacked(kind: str) -> dict[str, np.ndarray]:
    """Form (b): ``np.stack([feed[name] for feed in feeds])``, ``[N, *input_shape]`` (``[N]`` for a scalar)."""
    fs = feeds(kind)
    return {k: np.stack([f[k] for f in fs]) for k in fs[0]}


def write_forms(kind: str, tmp: Path) -> dict[str, Path]:
    """Forms (a), (b) as .npz files and (d) as a folder of .npz, one feed each."""
    out = {"a": tmp / f"{kind}_a.npz", "b": tmp / f"{kind}_b.npz", "d": tmp / f"{kind}_feeds"}
    np.savez(out["a"], **samples(kind))
    np.savez(out["b"], **stacked(kind))
    out["d"].mkdir()
    for i, f in enumerate(feeds(kind)):
        np.savez(out["d"] / f"feed_{i:03d}.npz", **f)
    return out


def outputs(model: onnx.ModelProto, ds: Dataset) -> np.ndarray:
    """The model's output on every sample of ``ds``, fed as the dataset feeds it."""
    return np.concatenate([run(model, f)[0].reshape(-1) for f, _ in ds.batches(32)])


# --------------------------------------------------------------------------- the loader


def test_batch_axes_are_found_from_the_graph() -> None:
    lay = {k: layouts(OrtRuntime(m()).inputs) for k, m in MODELS.items()}
    assert lay["fixed"]["x"].batch_axis == 0 and lay["fixed"]["x"].fixed_batch == 1
    assert lay["scalar"]["s"].batch_axis is None and lay["scalar"]["x"].batch_axis == 0
    assert lay["state"]["h"].batch_axis == 1 and lay["state"]["x"].batch_axis == 0


def test_batch_axis_rules_on_declared_shapes() -> None:
    from tensorslim.runtime.base import TensorSpec

    def axes(*shapes: tuple) -> list[int | None]:
        specs = [TensorSpec(f"i{k}", np.dtype(np.float32), s) for k, s in enumerate(shapes)]
        return [lay.batch_axis for lay in layouts(specs).values()]

    assert axes(("batch", "seq"), (1, "seq")) == [0, 0]  # position ids: seq is no batch
    assert axes(("batch", "seq", 16), (1, "batch", 64)) == [0, 1]  # an RNN state beside its input
    assert axes((2, None, 64)) == [1]  # the only dynamic dim, first dim fixed above 1
    assert axes((1, None)) == [0]  # a fixed batch of 1 with a dynamic length
    assert axes((4, 3), ()) == [0, None]


def test_fixed_batch_above_one_and_hand_built_datasets() -> None:
    r = rng(5)
    model = make([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [("x", F, [4, 8])], [("y", F, [4, 3])],
                 {"W": r.standard_normal((8, 3)).astype(np.float32)})  # fmt: skip
    ds = load_calibration({"x": r.standard_normal((10, 8)).astype(np.float32)}, model)
    assert ds.num_samples == 8 and any("last 2 sample(s) left out" in n for n in ds.notes)
    assert [f["x"].shape for f, _ in ds.batches(32)] == [(4, 8), (4, 8)]
    with pytest.raises(InputError, match="exactly 4 samples per call"):
        load_calibration({"x": np.ones((3, 8), np.float32)}, model)
    # a Dataset built by hand (samples along axis 0) is fed in the model's own layout
    a = samples("state")
    by_hand = Dataset({"x": a["x"], "h": np.moveaxis(a["h"], 1, 0)})
    rep = evaluate(OrtRuntime(state_model()), OrtRuntime(state_model()), by_hand)
    assert rep.num_samples == N and rep.outputs[0].cosine_min > 0.9999


@pytest.mark.parametrize("kind", list(MODELS))
def test_every_form_gives_the_same_samples(kind: str, tmp_path: Path) -> None:
    model = MODELS[kind]()
    files = write_forms(kind, tmp_path)
    forms = {
        "a": load_calibration(files["a"], model),
        "b": load_calibration(files["b"], model),
        "d": load_calibration(files["d"], model),
        "e": load_calibration(iter(feeds(kind)), model),
        "e-dict": load_calibration(samples(kind), model),
        "b-dict": load_calibration(stacked(kind), model),
    }
    ref = outputs(model, forms["a"])
    for name, ds in forms.items():
        assert ds.num_samples == N, name
        for k, v in forms["a"].inputs.items():
            np.testing.assert_array_equal(ds.inputs[k], v, err_msg=f"form {name}")
        np.testing.assert_array_equal(outputs(model, ds), ref, err_msg=f"form {name}")
    # the feeds are what the model declares: one sample a call for a fixed batch of 1 or a scalar input
    first = next(forms["b"].batches(8))[0]
    want = {"fixed": {"x": (1, 16, 96)}, "scalar": {"x": (1, 64), "s": ()}, "state": {"x": (6, 16), "h": (2, 6, 64)}}
    assert {k: v.shape for k, v in first.items()} == want[kind]


def test_refusals_name_the_shapes_they_accept(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        load_calibration({"x": np.zeros((4, 17, 96), np.float32)}, fixed_batch_model())
    msg = str(e.value)
    assert "size 17 on axis 1 where the model wants 16" in msg
    assert "[N, 16, 96] (N samples along axis 0), [N, 1, 16, 96] (a stack of N feeds) or [16, 96]" in msg
    with pytest.raises(InputError, match=r"give \[N\] \(N samples\) or \[\] \(one sample\)"):
        load_calibration({"x": np.zeros((4, 64), np.float32), "s": np.zeros((4, 2), np.float32)}, scalar_model())
    with pytest.raises(InputError, match=r"\[2, N, 64\] \(N samples along axis 1\)"):
        load_calibration({"x": np.zeros((4, 16), np.float32), "h": np.zeros((4, 2, 64, 1, 1), np.float32)},
                         state_model())  # fmt: skip
    with pytest.raises(InputError, match=r"different sample counts \{'x': 4, 'h': 3\}"):
        load_calibration({"x": np.zeros((4, 16), np.float32), "h": np.zeros((2, 3, 64), np.float32)}, state_model())
    with pytest.raises(InputError, match="a stack of feeds with batch 2"):
        load_calibration({"x": np.zeros((3, 2, 16, 96), np.float32)}, fixed_batch_model())


def test_batch_axis_given_by_the_user() -> None:
    """x [seq, batch, 16] (PyTorch's default RNN layout) cannot be told from its shapes; batch_axis= can."""
    r = rng(3)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    model = make(nodes, [("x", F, ["seq", "batch", 16])], [("y", F, ["seq", "batch", 8])],
                 {"W": r.standard_normal((16, 8)).astype(np.float32)})  # fmt: skip
    x = r.standard_normal((5, 3, 16)).astype(np.float32)  # 5 steps, 3 samples
    ds = load_calibration({"x": x}, model, batch_axis={"x": 1})
    assert ds.num_samples == 3 and next(ds.batches(2))[0]["x"].shape == (5, 2, 16)
    with pytest.raises(InputError, match="'nope' is not a model input"):
        load_calibration({"x": x}, model, batch_axis={"nope": 1})
    with pytest.raises(InputError, match="give an axis from 0 to 2"):
        load_calibration({"x": x}, model, batch_axis={"x": 3})


# --------------------------------------------------------------------------- the API and the CLI


@pytest.mark.parametrize("kind", list(MODELS))
def test_api_static_fp16_prune_eval_take_every_form(kind: str, tmp_path: Path) -> None:
    model = MODELS[kind]()
    files = write_forms(kind, tmp_path)
    q = quantize(model, config=StaticQuantConfig(latency_check=False), data=iter(feeds(kind)))
    ds = load_calibration(files["b"], model)
    assert "QuantizeLinear" in {n.op_type for n in q.model.graph.node}
    assert np.corrcoef(outputs(model, ds), outputs(q.model, ds))[0, 1] > 0.98
    h = quantize(model, config=Float16Config(), data=files["d"])
    assert np.corrcoef(outputs(model, ds), outputs(h.model, ds))[0, 1] > 0.999
    p = prune(model, config=PruneConfig(sparsity=0.3, method="wanda"), data=files["d"])
    assert p.modified
    rep = evaluate(OrtRuntime(model), OrtRuntime(p.model), files["b"])
    assert rep.num_samples == N and rep.outputs[0].cosine_mean > 0.5


@pytest.mark.parametrize("kind", list(MODELS))
def test_cli_commands_take_the_same_data_file(kind: str, tmp_path: Path) -> None:
    src = tmp_path / f"{kind}.onnx"
    onnx.save(MODELS[kind](), src)
    files = write_forms(kind, tmp_path)
    for form in ("a", "b", "d"):
        r = cli("quantize", str(src), "-o", str(tmp_path / f"q_{form}.onnx"), "--mode", "static",
                "--data", str(files[form]), "--no-check-speed", "--no-latency-check")  # fmt: skip
        assert r.returncode == 0, (form, r.stdout + r.stderr)
    r = cli("quantize", str(src), "-o", str(tmp_path / "h.onnx"), "--mode", "fp16", "--data", str(files["b"]),
            "--no-check-speed")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("prune", str(src), "-o", str(tmp_path / "p.onnx"), "--sparsity", "0.3", "--data", str(files["b"]))
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("eval", str(src), str(tmp_path / "q_a.onnx"), "--data", str(files["d"]), "--json", "-")
    assert r.returncode == 0 and f'"num_samples": {N}' in r.stdout, r.stdout + r.stderr
    r = cli("diagnose", str(src), str(tmp_path / "q_b.onnx"), "--data", str(files["a"]), "--json", "-")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("kind", list(MODELS))
def test_cluster_compress_optimize_take_every_form(kind: str, tmp_path: Path) -> None:
    """The same files feed cluster and compress, and optimize scores its candidates alike from each form (its
    workers get a folder of feeds as a folder, and the evaluation data keeps the model's batch axes)."""
    import json

    src = tmp_path / f"{kind}.onnx"
    onnx.save(MODELS[kind](), src)
    files = write_forms(kind, tmp_path)
    for form, path in files.items():
        r = cli("cluster", str(src), "-o", str(tmp_path / f"c_{form}.onnx"), "--clusters", "8", "--data", str(path))
        assert r.returncode == 0, (form, r.stdout + r.stderr)
        r = cli("compress", str(src), "-o", str(tmp_path / f"z_{form}.tslim"), "--data", str(path))
        assert r.returncode == 0, (form, r.stdout + r.stderr)
    scores = {}
    for form, path in files.items():
        r = cli("optimize", str(src), "--data", str(path), "--eval-data", str(path), "-o", str(tmp_path / f"o_{form}"),
                "--no-builtins", "--budget", "2", "--seconds", "0.05", "--workers", "1", "--min-score", "0",
                "--json", str(tmp_path / f"o_{form}.json"))  # fmt: skip
        assert r.returncode == 0, (form, r.stdout + r.stderr)
        result = json.loads((tmp_path / f"o_{form}.json").read_text())["search"]
        scores[form] = sorted((c["name"], round(c["score"], 6)) for c in result["candidates"] if c.get("score"))
    assert scores["a"] and scores["a"] == scores["b"] == scores["d"], scores


def test_cli_batch_axis_option(tmp_path: Path) -> None:
    r = rng(4)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    model = make(nodes, [("x", F, ["seq", "batch", 16])], [("y", F, ["seq", "batch", 8])],
                 {"W": r.standard_normal((16, 8)).astype(np.float32)})  # fmt: skip
    src, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(model, src)
    np.savez(data, x=r.standard_normal((5, 4, 16)).astype(np.float32))
    out = tmp_path / "q.onnx"
    res = cli("quantize", str(src), "-o", str(out), "--mode", "static", "--data", str(data), "--batch-axis", "x=1",
              "--no-check-speed", "--no-latency-check", "--json", "-")  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    res = cli("eval", str(src), str(out), "--data", str(data), "--batch-axis", "x=1", "--json", "-")
    assert res.returncode == 0 and '"num_samples": 4' in res.stdout, res.stdout + res.stderr
    res = cli("eval", str(src), str(out), "--data", str(data), "--batch-axis", "x:1")
    assert res.returncode == 2 and "is not NAME=AXIS" in res.stderr, res.stderr


# --------------------------------------------------------------------------- hostile and odd files


def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _write_member(z: zipfile.ZipFile, name: str, header: bytes, data: bytes) -> None:
    z.writestr(name + ".npy", header + data, compress_type=zipfile.ZIP_DEFLATED)


def test_unused_arrays_are_never_read(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "calib.npz"
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    np.savez(path, x=x, s=np.ones(4, np.float32))
    with zipfile.ZipFile(path, "a") as z:  # a 3.6 PiB header and a real 64 MiB array, neither used
        _write_member(z, "bomb", _npy_header("<f8", (2**49,)), b"\0" * 64)
        with z.open("big.npy", "w", force_zip64=True) as f:
            f.write(_npy_header("|u1", (64 << 20,)))
            for _ in range(64):
                f.write(bytes(1 << 20))
    tracemalloc.start()
    ds = load_calibration(path, scalar_model())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ds.num_samples == 4 and peak < 16 << 20


def test_max_samples_reads_only_the_rows_it_uses(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "big.npz"
    n = 50_000  # 12.8 MB of x, 8 used
    np.savez(path, x=np.ones((n, 64), np.float32), s=np.arange(n, dtype=np.float32), label=np.arange(n) % 3)
    tracemalloc.start()
    ds = load_calibration(path, scalar_model(), max_samples=8)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ds.num_samples == 8 and peak < 2 << 20
    np.testing.assert_array_equal(ds.inputs["s"], np.arange(8))
    np.testing.assert_array_equal(ds.labels, np.arange(8) % 3)  # type: ignore[arg-type]
    stacked_feeds = tmp_path / "stacked.npz"  # form (b) with feeds of 2 samples each: 5 feeds hold 10 samples
    np.savez(stacked_feeds, x=np.ones((40, 2, 64), np.float32), s=np.ones(80, np.float32))
    assert load_calibration(stacked_feeds, scalar_model(), max_samples=9).num_samples == 9
    bad = tmp_path / "bad.npz"  # sample counts that disagree are refused even when a prefix would hide it
    np.savez(bad, x=np.ones((100, 64), np.float32), s=np.ones(99, np.float32))
    with pytest.raises(InputError, match="different sample counts"):
        load_calibration(bad, scalar_model(), max_samples=8)


def test_hostile_headers_and_pickles_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(scalar_model(), src)
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w") as z:
        _write_member(z, "x", _npy_header("<f4", (2**48, 64)), b"\0" * 256)
        _write_member(z, "s", _npy_header("<f4", (4,)), b"\0" * 16)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x=np.array([{"a": 1}] * 4, dtype=object), s=np.ones(4, np.float32))
    truncated = tmp_path / "truncated.npz"
    good = tmp_path / "good.npz"
    np.savez(good, x=np.ones((4, 64), np.float32), s=np.ones(4, np.float32))
    truncated.write_bytes(good.read_bytes()[:300])
    cases = {bomb: "declares shape [281474976710656, 64]", pickled: "holds Python objects",
             truncated: "not a readable .npz"}  # fmt: skip
    for path, why in cases.items():
        r = cli("quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--mode", "static", "--data", str(path))
        assert r.returncode == 2 and why in r.stderr, (path.name, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_npy_data_and_labels(tmp_path: Path) -> None:
    one = tmp_path / "one.onnx"
    onnx.save(fixed_batch_model(), one)
    npy = tmp_path / "x.npy"
    np.save(npy, samples("fixed")["x"])
    r = cli("eval", str(one), str(one), "--data", str(npy), "--json", "-")
    assert r.returncode == 0 and f'"num_samples": {N}' in r.stdout, r.stderr
    two = tmp_path / "two.onnx"
    onnx.save(scalar_model(), two)
    r = cli("eval", str(two), str(two), "--data", str(npy))
    assert r.returncode == 2 and "a .npy holds one array but the model takes 2 inputs (x, s)" in r.stderr, r.stderr
    labelled = tmp_path / "labelled.npz"
    np.savez(labelled, **samples("scalar"), label=np.linspace(0, 1, N))
    r = cli("eval", str(two), str(two), "--data", str(labelled))
    assert r.returncode == 2 and "save them as integers" in r.stderr, r.stderr
    np.savez(labelled, **samples("scalar"), label=np.arange(N, dtype=np.float32))  # whole numbers: taken
    assert load_calibration(labelled, scalar_model()).labels.dtype == np.int64  # type: ignore[union-attr]
