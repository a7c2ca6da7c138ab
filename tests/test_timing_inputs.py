"""What the timing commands time on: a model that leaves image or sequence sizes open gets them from real data or
``--shape``, and a timing on generated inputs that made them 1 (a 1x1 image) says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models import cli, make, rng
from tensorslim.benchmark import benchmark_models
from tensorslim.benchmark.inputs import InputSpec, make_inputs, parse_shape, unsized_dims
from tensorslim.benchmark.table import shape_note
from tensorslim.errors import InputError

F = TensorProto.FLOAT


def _open_sized_convnet(dims: list[int | str | None]) -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> GlobalAveragePool on an image whose height and width the model leaves open."""
    r = rng(3)
    inits = {"W1": (r.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "B1": r.standard_normal(8).astype(np.float32),
             "W2": (r.standard_normal((8, 8, 3, 3)) * 0.3).astype(np.float32), "B2": r.standard_normal(8).astype(np.float32)}  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["y"]),
    ]
    return make(nodes, [("x", F, dims)], [("y", F, ["batch", 8, 1, 1])], inits)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("shapes")
    onnx.save(_open_sized_convnet(["batch", 3, None, None]), d / "open.onnx")
    onnx.save(_open_sized_convnet(["batch", 3, "height", "width"]), d / "named.onnx")
    np.savez(d / "calib.npz", x=rng(4).standard_normal((6, 3, 24, 40)).astype(np.float32))
    return {"open": d / "open.onnx", "named": d / "named.onnx", "calib": d / "calib.npz", "dir": d}


def test_open_sizes_are_listed_and_a_whole_shape_sizes_them() -> None:
    specs = [InputSpec("x", ("b", 3, None, "w"), "tensor(float)"), InputSpec("n", (1,), "tensor(int64)")]
    assert unsized_dims(specs) == {"x": [2, 3]}
    assert unsized_dims(specs, {"w": 32}) == {"x": [2]}
    assert unsized_dims(specs, shapes={"x": (1, 3, 8, 8)}) == {}
    arrays, samples = make_inputs(specs, shapes={"x": (2, 3, 8, 16)})
    assert arrays["x"].shape == (2, 3, 8, 16) and samples == 2  # the shape's first size is the samples per run
    assert parse_shape("x=1x3x48x192") == ("x", (1, 3, 48, 192))
    assert parse_shape("input:0=2,5") == ("input:0", (2, 5))
    for bad in ("x", "x=", "=1x2", "x=1x0x3", "x=1xax3"):
        with pytest.raises(InputError, match="--shape"):
            parse_shape(bad)
    for shapes, msg in (({"x": (1, 3, 8)}, "3 dims given, the input has 4"), ({"x": (1, 4, 8, 8)}, "fixed at 3"),
                        ({"y": (1, 3, 8, 8)}, "'y' is no input")):  # fmt: skip
        with pytest.raises(InputError, match=msg):
            make_inputs(specs, shapes=shapes)


def test_bench_says_when_it_timed_a_size_1_image_and_times_the_real_size_when_told(files: dict[str, Path]) -> None:
    a = str(files["open"])
    rep = benchmark_models([a, a], max_time_s=0.02, min_runs=3, warmup=1, measure_memory=False)
    assert rep.settings["input_shapes"] == {"x": [1, 3, 1, 1]} and rep.settings["unsized_inputs"] == {"x": [2, 3]}
    note = shape_note(rep)
    assert "'x' axes 2, 3 (timed as 1x3x1x1)" in note and "--shape x=1x3xNxN" in note
    rep = benchmark_models([a], shapes={"x": (1, 3, 32, 48)}, max_time_s=0.02, min_runs=3, measure_memory=False)
    assert rep.settings["input_shapes"] == {"x": [1, 3, 32, 48]} and shape_note(rep) == ""
    named = benchmark_models([files["named"]], dim_overrides={"height": 16, "width": 24}, max_time_s=0.02,
                             min_runs=3, measure_memory=False)  # fmt: skip
    assert named.settings["input_shapes"] == {"x": [1, 3, 16, 24]} and shape_note(named) == ""

    out = files["dir"] / "b.json"
    r = cli("bench", a, a, "--no-memory", "--seconds", "0.02", "--json", str(out))
    assert r.returncode == 0 and "timed as 1x3x1x1" in " ".join((r.stdout + r.stderr).split())
    r = cli("bench", a, a, "--no-memory", "--seconds", "0.02", "--shape", "x=1x3x20x28", "--json", str(out))
    assert r.returncode == 0 and "timed as" not in r.stdout + r.stderr
    assert json.loads(out.read_text())["settings"]["input_shapes"] == {"x": [1, 3, 20, 28]}
    r = cli("bench", a, a, "--no-memory", "--seconds", "0.02", "--data", str(files["calib"]), "--batch-size", "2",
            "--json", str(out))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(out.read_text())["settings"]["input_shapes"] == {"x": [2, 3, 24, 40]}
    for args, msg in ((("--shape", "x=1x3x20"), "3 dims given"), (("--shape", "x=1x4x8x8"), "fixed at 3"),
                      (("--shape", "img=1x3x8x8"), "no input"), (("--shape", "x=big"), "INPUT=SIZExSIZE"),
                      (("--shape", "x=1x3x8x8", "--data", str(files["calib"])), "drop --shape")):  # fmt: skip
        r = cli("bench", a, "--no-memory", "--seconds", "0.02", *args)
        err = " ".join(r.stderr.split())
        assert r.returncode == 2 and msg in err and "Traceback" not in r.stdout + r.stderr, (args, err)


def test_quantize_speed_check_times_a_calibration_sample(files: dict[str, Path]) -> None:
    d, a = files["dir"], str(files["open"])
    r = cli("quantize", a, "-o", str(d / "s.onnx"), "--mode", "static", "--data", str(files["calib"]),
            "--no-latency-check", "--json", str(d / "s.json"))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    check = json.loads((d / "s.json").read_text())["speed_check"]
    assert check["inputs"] == "calibration sample" and check["input_shapes"] == {"x": [1, 3, 24, 40]}
    assert check["unsized_inputs"] == {} and "calibration sample: x 1x3x24x40" in " ".join((r.stdout + r.stderr).split())
    # no data: generated inputs, and the check says what it made of the open sizes and how to time real ones
    r = cli("quantize", a, "-o", str(d / "d.onnx"), "--json", str(d / "d.json"), "--report", str(d / "d.html"))
    assert r.returncode == 0, r.stdout + r.stderr
    check = json.loads((d / "d.json").read_text())["speed_check"]
    assert check["inputs"] == "generated inputs" and check["unsized_inputs"] == {"x": [2, 3]}
    err = " ".join(r.stderr.split())
    assert "timed as 1x3x1x1" in err and f"tensorslim bench {a} {d / 'd.onnx'} --data" in err
    html = (d / "d.html").read_text()  # the report says what the speed check timed, and the warning
    assert "speed check timed on generated inputs: x 1x3x1x1" in html and "timed as 1x3x1x1" in html


def test_doctor_warns_that_its_timings_ran_on_a_size_1_image(files: dict[str, Path]) -> None:
    from tensorslim.diagnostics.doctor import doctor

    d, a = files["dir"], files["open"]
    q = d / "q.onnx"
    assert cli("quantize", str(a), "-o", str(q), "--no-check-speed").returncode == 0
    codes = {f.code: f for f in doctor(q, baseline=a, seconds=0.05).findings}
    assert "timing-inputs" in codes and "axes 2, 3" in codes["timing-inputs"].message
    assert codes["timing-inputs"].fix.startswith("pass --data")
    x = {"x": rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    assert "timing-inputs" not in {f.code for f in doctor(q, baseline=a, inputs=x, seconds=0.05).findings}


def test_profile_warns_on_generated_size_1_inputs_and_not_on_data(files: dict[str, Path]) -> None:
    a = str(files["open"])
    r = cli("profile", a, "--runs", "2", "--warmup", "0")
    assert r.returncode == 0 and "'x' axes 2, 3 (timed as 1x3x1x1)" in " ".join(r.stderr.split())
    r = cli("profile", a, "--runs", "2", "--warmup", "0", "--data", str(files["calib"]))
    assert r.returncode == 0 and "timed as" not in r.stderr
    r = cli("profile", str(files["dir"] / "missing.onnx"))
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr


def test_eval_on_generated_inputs_says_what_it_made_of_open_sizes(files: dict[str, Path]) -> None:
    from tensorslim.data import generate_inputs
    from tensorslim.runtime.ort import OrtRuntime

    note = " ".join(generate_inputs(OrtRuntime(str(files["open"])).inputs, 2).notes)
    assert "open made 1 ('x' as 3x1x1 per sample)" in note and "--data" in note
    sized = generate_inputs(OrtRuntime(str(files["named"])).inputs, 2, dim_overrides={"height": 8, "width": 8})
    assert sized.inputs["x"].shape == (2, 3, 8, 8) and "open made" not in " ".join(sized.notes)


def _pyramid(dims: list[int | str | None]) -> onnx.ModelProto:
    """A feature pyramid's join, as in YOLO-style detectors: two stride-2 Convs, the deeper map upsampled 2x and
    concatenated with the shallower one. It runs only where height and width are even after the first stride (a
    multiple of 4): at 1x1 the maps meet as 1 and 2."""
    r = rng(6)
    inits = {"W1": (r.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32),
             "W2": (r.standard_normal((16, 16, 3, 3)) * 0.3).astype(np.float32),
             "S": np.array([1, 1, 2, 2], np.float32)}  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["c1", "W2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Resize", ["c2", "", "S"], ["up"], mode="nearest"),
        helper.make_node("Concat", ["c1", "up"], ["y"], axis=1),
    ]
    return make(nodes, [("x", F, dims)], [("y", F, ["batch", 32, None, None])], inits)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("pyramid") / "pyramid.onnx"
    onnx.save(_pyramid(["batch", 3, "height", "width"]), p)
    return p


def test_generated_inputs_take_the_first_open_size_the_model_runs(pyramid: Path) -> None:
    """A detector that fails at 1x1 is timed, profiled, checked and compared at 32x32 by every command without data,
    each saying what it made up; nothing logs ONNX Runtime's own error line."""
    from tensorslim.data import generate_inputs, generate_runnable
    from tensorslim.runtime.ort import OrtRuntime

    rt = OrtRuntime(str(pyramid))
    with pytest.raises(InputError, match="inference failed on inputs x\\[1, 3, 1, 1\\]"):
        rt.run(generate_inputs(rt.inputs, 1).inputs)  # the size-1 image this model cannot take
    ds = generate_runnable(rt, 2)
    assert ds.inputs["x"].shape == (2, 3, 32, 32) and rt.run(ds.inputs)[0].shape == (2, 32, 16, 16)
    notes = " ".join(ds.notes)
    assert "open sizes made 1 do not run" in notes and "made 32, the first of 1, 32" in notes

    a, d = str(pyramid), pyramid.parent
    rep = benchmark_models([a, a], max_time_s=0.02, min_runs=3, warmup=1, measure_memory=False)
    assert rep.settings["input_shapes"] == {"x": [1, 3, 32, 32]} and "timed as 1x3x32x32" in shape_note(rep)
    for args in (("bench", a, a, "--no-memory", "--seconds", "0.02"), ("profile", a, "--runs", "2", "--warmup", "0"),
                 ("doctor", a, "--seconds", "0.05"), ("eval", a, a), ("quantize", a, "-o", str(d / "q.onnx")),
                 ("quantize", a, "-o", str(d / "h.onnx"), "--mode", "fp16")):  # fmt: skip
        r = cli(*args)
        out = " ".join((r.stdout + r.stderr).split())
        assert r.returncode == 0, (args, out)
        assert ("32x32" in out or "made 32" in out) and "[E:onnxruntime" not in out and "Traceback" not in out, (args, out)
    r = cli("diagnose", a, str(d / "q.onnx"))
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_open_sizes_stop_at_the_value_bound_and_a_model_that_never_runs_says_why(tmp_path: Path) -> None:
    from tensorslim.data.generate import MAX_TRIAL_VALUES, first_size_that_runs

    tried: list[int] = []

    def run(n: int) -> None:
        tried.append(n)
        raise RuntimeError(f"fails at {n}")

    made, n, error = first_size_that_runs(lambda n: n, run, values=lambda n: n**4 * 3)
    assert (made, n, error) == (1, 1, "") and tried == [1, 32, 64]  # 128^4 x 3 values is over the bound
    assert 64**4 * 3 <= MAX_TRIAL_VALUES < 128**4 * 3
    assert first_size_that_runs(lambda n: n, lambda n: n == 1 and run(n), values=lambda n: n)[1:] == (32, "fails at 1")

    # a Reshape to a fixed size fits no made-up image: the command reports the size-1 failure, exit 2, one line
    model = make([helper.make_node("Reshape", ["x", "s"], ["y"])], [("x", F, ["batch", 3, "h", "w"])],
                 [("y", F, [1, 7])], {"s": np.array([1, 7], np.int64)})  # fmt: skip
    p = tmp_path / "never.onnx"
    onnx.save(model, p)
    for args in (("bench", str(p), "--no-memory", "--seconds", "0.02"), ("eval", str(p), str(p))):
        r = cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr and "[E:onnxruntime" not in r.stderr
        assert ",3,1,1]" in "".join(r.stderr.split()) and "--data" in r.stderr, r.stderr
