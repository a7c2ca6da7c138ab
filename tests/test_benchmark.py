"""Tests of tensorslim.benchmark on tiny MatMul models built inline."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis.strategies import floats as st_floats
from hypothesis.strategies import integers as st_integers
from hypothesis.strategies import lists as st_lists
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from models import cli
from tensorslim.benchmark import (
    BenchReport,
    InputSpec,
    benchmark_models,
    bootstrap_median_ci,
    file_bytes,
    load_model_proto,
    make_inputs,
    render_bench_table,
    weight_bytes,
)
from tensorslim.benchmark.latency import (
    block_bounds,
    block_median_ci,
    interleaved_runs,
    latency_stats,
    paired_ratio_ci,
    timed_ratio,
    warm_up,
)
from tensorslim.benchmark.memory import current_rss, measure_memory
from tensorslim.benchmark.sysinfo import _parse_cpuinfo

OPSET = [helper.make_opsetid("", 17)]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _matmul_chain(path: Path, dims: list[int], *, input_name: str = "x", seed: int = 0) -> Path:
    """x[N, dims[0]] @ W0[dims[0], dims[1]] @ W1 ... -> y."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur = input_name
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == len(dims) - 2 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [out]))
        cur = out
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dims[-1]])],
        inits,
    )
    return _save(helper.make_model(graph, opset_imports=OPSET), path)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bench")
    return {
        "small": _matmul_chain(d / "small.onnx", [256, 256]),
        "big": _matmul_chain(d / "big.onnx", [256, 1024, 1024, 1024, 1024]),
    }


@pytest.fixture(scope="module")
def report(models: dict[str, Path]) -> BenchReport:
    return benchmark_models([models["small"], models["big"]], max_time_s=0.4, min_runs=30, warmup=None, round_size=3)


# --------------------------------------------------------------------------- sizes


def test_sizes_match_disk_and_weights(report: BenchReport, models: dict[str, Path]) -> None:
    small, big = report.models
    assert small.file_bytes == os.path.getsize(models["small"])
    assert big.file_bytes == os.path.getsize(models["big"])
    assert small.weight_bytes == 256 * 256 * 4
    assert big.weight_bytes == (256 * 1024 + 3 * 1024 * 1024) * 4
    assert small.name == "small.onnx" and small.path == str(models["small"])


def test_external_data_counted(tmp_path: Path) -> None:
    src = _matmul_chain(tmp_path / "src.onnx", [256, 512])
    model = onnx.load(str(src))
    ext = tmp_path / "ext.onnx"
    onnx.save(model, str(ext), save_as_external_data=True, location="ext.data", size_threshold=0)
    proto = load_model_proto(ext)
    assert proto.graph.initializer[0].data_location == TensorProto.EXTERNAL
    assert weight_bytes(proto) == 256 * 512 * 4
    assert file_bytes(proto, ext) == os.path.getsize(ext) + os.path.getsize(tmp_path / "ext.data")
    (tmp_path / "ext.data").unlink()
    with pytest.raises(ValueError, match=r"ext\.data"):
        file_bytes(proto, ext)


def test_constants_and_subgraphs_counted(tmp_path: Path) -> None:
    c_main = numpy_helper.from_array(np.ones((10, 10), np.float32), "c")
    c_then = numpy_helper.from_array(np.ones((7,), np.int64), "t")
    c_else = numpy_helper.from_array(np.ones((7,), np.int64), "e")

    def branch(name: str, tensor: TensorProto) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Constant", [], [name], value=tensor)],
            name,
            [],
            [helper.make_tensor_value_info(name, TensorProto.INT64, [7])],
        )

    nodes = [
        helper.make_node("Constant", [], ["c"], value=c_main),
        helper.make_node("If", ["cond"], ["r"], then_branch=branch("tb", c_then), else_branch=branch("eb", c_else)),
        helper.make_node("Constant", [], ["f"], value_floats=[1.0, 2.0, 3.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [
            helper.make_tensor_value_info("r", TensorProto.INT64, [7]),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [10, 10]),
            helper.make_tensor_value_info("f", TensorProto.FLOAT, [3]),
        ],
    )
    path = _save(helper.make_model(graph, opset_imports=OPSET), tmp_path / "if.onnx")
    assert weight_bytes(load_model_proto(path)) == 400 + 2 * 56 + 12


# --------------------------------------------------------------------------- latency


def test_latency_statistics(report: BenchReport) -> None:
    for m in report.models:
        assert m.runs >= 30 and m.runs == len(m.latencies_ms)
        assert m.warmup_runs >= 2
        assert 0 < m.min_ms <= m.p50_ms <= m.p90_ms <= m.p99_ms
        assert m.p50_ci_low_ms <= m.p50_ms <= m.p50_ci_high_ms
        assert m.p50_ms == pytest.approx(float(np.median(m.latencies_ms)))
        assert m.throughput == pytest.approx(m.batch_size / (m.mean_ms / 1e3))
        assert m.load_ms > 0 and len(m.load_ms_runs) == 3


def test_bigger_model_is_slower(report: BenchReport) -> None:
    small, big = report.models
    assert big.p50_ms > small.p50_ms
    assert report.ratio("p50_ms")[1] > 1.0  # type: ignore[operator]


def test_interleaving_gives_equal_run_counts(report: BenchReport) -> None:
    assert report.settings["interleaved"] is True
    assert report.models[0].runs == report.models[1].runs


def test_interleaved_runs_order() -> None:
    log: list[str] = []
    fns = [lambda n=n: log.append(n) for n in "abc"]
    samples = interleaved_runs(fns, min_runs=4, max_time_s=0.0, round_size=2, round_warmup=0)
    assert [len(s) for s in samples] == [4, 4, 4]
    assert "".join(log) == "aabbcc" + "bbccaa"  # the first model rotates every round
    log.clear()
    samples = interleaved_runs(fns, min_runs=2, max_time_s=0.0, round_size=2, round_warmup=1)
    assert [len(s) for s in samples] == [2, 2, 2]
    assert "".join(log) == "aaabbbccc"  # one untimed run after every model switch
    log.clear()
    assert [len(s) for s in interleaved_runs(fns[:1], min_runs=3, max_time_s=0.0, round_size=3)] == [3]
    assert "".join(log) == "aaa"  # a single model has no switches


def test_warm_up_fixed_and_auto() -> None:
    calls: list[int] = []
    assert warm_up(lambda: calls.append(1), runs=7, time_budget_s=10) == 7
    assert len(calls) == 7
    n = warm_up(lambda: sum(range(2000)), runs=None, time_budget_s=1.0)
    assert 10 <= n <= 200


def test_bootstrap_ci_is_reproducible_and_contains_median() -> None:
    x = np.random.default_rng(1).lognormal(size=300)
    lo, hi = bootstrap_median_ci(x, seed=3)
    assert (lo, hi) == bootstrap_median_ci(x, seed=3)
    assert lo <= np.median(x) <= hi
    st = latency_stats([5.0])
    assert st.ci_low == st.ci_high == st.p50 == 5.0


# --------------------------------------------------------------------------- memory


def test_memory_measured_in_subprocess(report: BenchReport) -> None:
    small, big = report.models
    assert small.memory is not None and big.memory is not None, (small.memory_error, big.memory_error)
    for mem in (small.memory, big.memory):
        assert mem.baseline_rss_bytes > 0
        assert mem.peak_rss_inference_bytes >= mem.peak_rss_session_bytes > 0
        assert mem.peak_rss_bytes > mem.baseline_rss_bytes
        if sys.platform.startswith("linux"):
            assert mem.source == "VmHWM"
    # big holds ~13 MB of weights more than small.
    assert big.memory.session_rss_bytes > small.memory.session_rss_bytes
    assert big.memory.session_rss_bytes - small.memory.session_rss_bytes > 8 * 1024 * 1024


def test_worker_peak_not_inherited_from_parent(models: dict[str, Path]) -> None:
    """A child's ru_maxrss starts at the parent's peak on Linux; the worker must not report that."""
    ballast = np.ones(256 * 1024 * 1024 // 8)  # touch 256 MB in this (parent) process
    parent_rss = current_rss()
    mem = measure_memory(models["small"], {"x": np.ones((1, 256), np.float32)})
    assert mem.peak_rss_bytes < parent_rss
    del ballast


# --------------------------------------------------------------------------- report, table


def test_ratios_and_to_dict(report: BenchReport) -> None:
    small, big = report.models
    assert report.ratio("p50_ms")[0] == 1.0
    assert report.ratio("file_bytes") == (1.0, big.file_bytes / small.file_bytes)
    assert report.size_ratios()[0] == 1.0
    assert report.speedups()[1] == pytest.approx(small.p50_ms / big.p50_ms)
    with pytest.raises(KeyError):
        report.ratio("nope")
    d = json.loads(json.dumps(report.to_dict()))
    assert d["ratios"]["weight_bytes"][0] == 1.0
    assert d["models"][0]["latency_ms"]["p50"] == small.p50_ms
    assert "latencies_ms" not in d["models"][0]
    assert len(report.to_dict(include_samples=True)["models"][1]["latencies_ms"]) == big.runs
    env = d["env"]
    assert env["execution_provider"] == "CPUExecutionProvider" and env["threads"] == 1
    assert env["onnxruntime_version"] and env["machine"] and isinstance(env["cpu_flags"], list)


def test_render_table(report: BenchReport) -> None:
    console = Console(record=True, width=250)
    console.print(render_bench_table(report))
    text = console.export_text()
    for needle in ("small.onnx", "big.onnx", "file MB", "p50 ms", "size x", "1.00x", "CPUExecutionProvider"):
        assert needle in text
    assert f"{report.ratio('file_bytes')[1]:.2f}x" in text
    compact = render_bench_table(report, compact=True)
    assert len(compact.columns) == len(render_bench_table(report).columns) - 3


def test_parse_cpuinfo() -> None:
    x86 = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_int8 sse\n"
    assert _parse_cpuinfo(x86) == ("Some CPU", ("amx_int8", "avx2", "avx512_vnni", "avx512f"))
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm fphp\nCPU part\t: 0xd0c\n"
    assert _parse_cpuinfo(arm)[1] == ("asimd", "asimddp", "fphp", "i8mm")


# --------------------------------------------------------------------------- inputs and errors


def test_make_inputs_rules() -> None:
    specs = [
        InputSpec("ids", ("batch", "sequence"), "tensor(int64)"),
        InputSpec("attention_mask", ("batch", "sequence"), "tensor(int64)"),
        InputSpec("pix", (None, 3, "h"), "tensor(float)"),
        InputSpec("flag", (), "tensor(bool)"),
    ]
    arrays, samples = make_inputs(specs, batch_size=4, dim_overrides={"sequence": 16}, seed=0)
    assert samples == 4
    assert arrays["ids"].shape == (4, 16) and arrays["ids"].dtype == np.int64
    assert arrays["ids"].min() >= 0 and arrays["ids"].max() <= 99
    assert np.all(arrays["attention_mask"] == 1)
    assert arrays["pix"].shape == (4, 3, 1) and arrays["pix"].dtype == np.float32
    assert arrays["flag"].dtype == np.bool_ and bool(arrays["flag"])
    again, _ = make_inputs(specs, batch_size=4, dim_overrides={"sequence": 16}, seed=0)
    assert np.array_equal(again["pix"], arrays["pix"])
    with pytest.raises(ValueError, match="txt"):
        make_inputs([InputSpec("txt", (1,), "tensor(string)")])


def test_user_inputs_and_batch(models: dict[str, Path]) -> None:
    x = np.ones((8, 256), np.float32)
    rep = benchmark_models(
        [models["small"]],
        inputs={"x": x},
        batch_size=8,
        max_time_s=0.05,
        min_runs=5,
        warmup=2,
        measure_memory=False,
    )
    m = rep.models[0]
    assert m.memory is None and m.memory_error is None
    assert m.batch_size == 8 and m.warmup_runs == 3
    assert rep.settings["input_shapes"] == {"x": [8, 256]}
    assert rep.ratio("p50_ms") == (1.0,) and rep.ratio("peak_rss_bytes") == (None,)


def test_incompatible_inputs(models: dict[str, Path], tmp_path: Path) -> None:
    other = _matmul_chain(tmp_path / "other.onnx", [256, 256], input_name="z")
    with pytest.raises(ValueError, match=r"other\.onnx.*'z'"):
        benchmark_models([models["small"], other], max_time_s=0.05, measure_memory=False)
    wide = _matmul_chain(tmp_path / "wide.onnx", [128, 256])
    with pytest.raises(ValueError, match=r"wide\.onnx.*'x'.*128"):
        benchmark_models([models["small"], wide], max_time_s=0.05, measure_memory=False)
    with pytest.raises(ValueError, match="float"):
        benchmark_models([models["small"]], inputs={"x": np.ones((1, 256), np.int64)}, measure_memory=False)
    with pytest.raises(ValueError, match="typo"):
        benchmark_models(
            [models["small"]],
            inputs={"x": np.ones((1, 256), np.float32), "typo": np.ones(1)},
            measure_memory=False,
        )


@pytest.mark.parametrize("content", [None, b"", b"definitely not a protobuf \xff\xfe", b"\x08\x07"])
def test_bad_file_raises_value_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        benchmark_models([path], max_time_s=0.05, measure_memory=False)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_arguments(models: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="no model"):
        benchmark_models([])
    with pytest.raises(ValueError, match="threads"):
        benchmark_models([models["small"]], threads=-1)
    with pytest.raises(ValueError, match="sequence"):
        benchmark_models(str(models["small"]))


# --------------------------------------------------------------------------- confidence intervals


def test_ratio_ci_present_and_brackets_the_ratio(report: BenchReport) -> None:
    small, big = report.models
    assert small.p50_ratio is None and small.p50_ratio_ci is None
    assert big.p50_ratio == pytest.approx(big.p50_ms / small.p50_ms)
    assert big.p50_ratio_ci is not None
    lo, hi = big.p50_ratio_ci
    assert lo <= big.p50_ratio <= hi
    assert report.latency_ratio_cis() == (None, big.p50_ratio_ci)
    assert big.ci_blocks >= 3  # enough runs for the batch-means interval


def test_json_schema_keys(report: BenchReport) -> None:
    d = json.loads(json.dumps(report.to_dict()))
    assert set(d) == {"env", "settings", "models", "ratios", "ratio_ci95"}
    assert d["ratio_ci95"]["p50_ms"][0] is None
    lo, hi = d["ratio_ci95"]["p50_ms"][1]
    assert lo <= d["ratios"]["p50_ms"][1] <= hi
    first, second = d["models"]
    assert first["p50_ratio"] is None
    assert set(second["p50_ratio"]) == {"value", "ci95"} and second["p50_ratio"]["ci95"] == [lo, hi]
    assert set(second["latency_ms"]) == {"p50", "p90", "p99", "mean", "min", "p50_ci95", "ci_blocks"}
    assert "ci" in d["settings"]
    assert set(d["settings"]["contention"]) == {"load_avg_1m", "cpus", "preemptions_per_run", "busy"}


def test_table_shows_ratio_ci(report: BenchReport) -> None:
    console = Console(record=True, width=250)
    console.print(render_bench_table(report))
    text = console.export_text()
    lo, hi = report.models[1].p50_ratio_ci  # type: ignore[misc]
    assert "p50 x (95% CI)" in text and f"({lo:.2f}-{hi:.2f})" in text


def test_block_ci_widens_under_drift_and_pairing_cancels_it() -> None:
    r = np.random.default_rng(0)
    n = 800
    noise = r.lognormal(0, 0.05, size=n)
    steady = 1.0 * noise
    drift = np.linspace(1.0, 1.3, n)  # the machine slows down by 30 % during the run
    ref = drift * noise
    cand = 0.5 * drift * r.lognormal(0, 0.05, size=n)
    boot = bootstrap_median_ci(ref)
    block = block_median_ci(ref, round_size=5)
    assert block is not None and block[1] - block[0] > 3 * (boot[1] - boot[0])
    st = latency_stats(ref, round_size=5)
    assert st.ci_low <= block[0] and st.ci_high >= block[1] and st.ci_blocks == 16
    # steady data: the batch-means interval is about as wide as the bootstrap
    steady_block, steady_boot = block_median_ci(steady, round_size=5), bootstrap_median_ci(steady)
    assert steady_block is not None
    assert steady_block[1] - steady_block[0] < 3 * (steady_boot[1] - steady_boot[0])
    # the ratio of two models that drift together is known tightly
    lo, hi = paired_ratio_ci(ref, cand, round_size=5)  # type: ignore[misc]
    assert lo <= float(np.median(cand) / np.median(ref)) <= hi and hi - lo < 0.05
    assert lo < 0.5 < hi
    assert block_median_ci([1.0, 2.0, 3.0]) is None  # too few runs: bootstrap only
    assert latency_stats([1.0, 2.0, 3.0]).ci_blocks == 0


def test_timed_ratio_holds_while_the_machine_changes_speed() -> None:
    """Two models whose times the machine scales alike, 2x slower for a few rounds at a time (a shared host):
    the ratio of each round is the models' ratio, so the median over rounds is too; its interval holds it."""
    import time as _time

    calls = [0]

    def model(ms: float) -> Callable[[], None]:
        def run() -> None:
            calls[0] += 1
            slow = 2.0 if (calls[0] // 36) % 2 else 1.0  # 36 calls: three rounds of 2 x (1 + 5) runs
            _time.sleep(ms * slow / 1000.0)

        return run

    ratio, lo, hi = timed_ratio(model(2.0), model(1.6), seconds=1.0, min_runs=20)
    assert 0.75 < ratio < 0.85 and lo <= ratio <= hi
    ratio, lo, hi = timed_ratio(model(2.0), model(4.0), seconds=0.6, min_runs=10, max_round=1)
    assert 1.8 < ratio < 2.2 and lo <= ratio <= hi


def test_block_bounds_hold_whole_rounds() -> None:
    bounds = block_bounds(100, round_size=5, max_blocks=16)
    assert len(bounds) == 16 and bounds[0][0] == 0 and bounds[-1][1] == 100
    assert all(a % 5 == 0 for a, _ in bounds) and all(b > a for a, b in bounds)
    assert block_bounds(10, round_size=5) == []  # 2 rounds: no batch means


@settings(max_examples=40, deadline=None)
@given(
    st_lists(st_floats(0.1, 100.0), min_size=2, max_size=120),
    st_floats(0.05, 20.0),
    st_integers(1, 7),
)
def test_paired_ratio_ci_brackets_the_ratio(xs: list[float], factor: float, round_size: int) -> None:
    ref = np.asarray(xs)
    cand = ref[::-1] * factor
    ci = paired_ratio_ci(ref, cand, round_size=round_size)
    assert ci is not None
    point = float(np.median(cand) / np.median(ref))
    assert ci[0] <= point * (1 + 1e-9) and point <= ci[1] * (1 + 1e-9)
    stats = latency_stats(xs, round_size=round_size)
    assert stats.ci_low <= stats.p50 <= stats.ci_high


def test_bench_feeds_an_integer_input_model_the_same_data_quantized(tmp_path: Path) -> None:
    """A static model with ``--io uint8`` takes uint8 inputs: the benchmark quantizes the shared float feeds."""
    import onnxruntime as ort

    from tensorslim.benchmark.inputs import feeds_for, specs_from_session
    from tensorslim.passes.static_io import read_io_quantization

    fp = _matmul_chain(tmp_path / "f.onnx", [32, 64, 16])
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32))
    q = tmp_path / "q.onnx"
    done = cli("quantize", str(fp), "-o", str(q), "--mode", "static", "--no-latency-check", "--io", "uint8", "--data",
               str(tmp_path / "calib.npz"), "--no-check-speed")  # fmt: skip
    assert done.returncode == 0, done.stderr
    bad = cli("quantize", str(fp), "-o", str(tmp_path / "bad.onnx"), "--mode", "static", "--io", "uint16", "--data",
              str(tmp_path / "calib.npz"))  # fmt: skip
    assert bad.returncode == 2 and "--io: 'uint16' is not one of float, uint8, int8" in bad.stderr, bad.stderr
    q_sess, f_sess = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (q, fp))
    assert q_sess.get_inputs()[0].type == "tensor(uint8)"
    (spec,) = specs_from_session(q_sess)
    assert spec.quantization is not None and specs_from_session(f_sess)[0].quantization is None
    scale, zero_point = spec.quantization
    # both orders: the inputs are generated from the first model's signature
    for paths in ([fp, q], [q, fp]):
        rep = benchmark_models(paths, max_time_s=0.05, min_runs=3, warmup=1, measure_memory=False, batch_size=4)
        assert [m.p50_ms > 0 for m in rep.models] == [True, True]
    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    feeds = feeds_for("q.onnx", [spec], {"x": x})
    expect = np.clip(np.round(x / np.float32(scale)) + zero_point, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(feeds["x"], expect)
    # the integer model computes on the same data: its output, dequantized, is the float model's within int8 error
    (y_q,) = q_sess.run(None, feeds)
    (y_f,) = f_sess.run(None, feeds_for("f.onnx", specs_from_session(f_sess), {"x": x}))
    out = read_io_quantization(onnx.load(str(q)))["outputs"]["y"]
    assert y_q.dtype == np.uint8
    y = (y_q.astype(np.float32) - out["zero_point"]) * np.float32(out["scale"])
    assert np.abs(y - y_f).max() < 0.1 * np.abs(y_f).max()
    with pytest.raises(ValueError, match="expects tensor\\(uint8\\) but got an array of int64"):
        feeds_for("q.onnx", [spec], {"x": x.astype(np.int64)})


def test_denormal_flush_is_applied_and_recorded(models: dict[str, Path]) -> None:
    from tensorslim.benchmark.latency import session_options

    assert session_options(1, denormal_as_zero=True).get_session_config_entry("session.set_denormal_as_zero") == "1"
    rep = benchmark_models(
        [models["small"]], max_time_s=0.05, min_runs=5, warmup=2, measure_memory=False, denormal_as_zero=True
    )
    assert rep.settings["denormal_as_zero"] is True
    assert rep.models[0].p50_ms > 0


def test_generated_indices_stay_inside_gathered_tables(tmp_path: Path) -> None:
    from tensorslim.backends.onnx.indices import index_bounds

    table = np.arange(2 * 4, dtype=np.float32).reshape(2, 4)  # e.g. token type embeddings: 2 rows
    words = np.ones((500, 4), np.float32)
    nodes = [
        helper.make_node("Cast", ["types"], ["types64"], to=TensorProto.INT64),
        helper.make_node("Gather", ["T", "types64"], ["a"]),
        helper.make_node("Gather", ["W", "ids"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("types", TensorProto.INT32, ["b", 8]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "T"), numpy_helper.from_array(words, "W")],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "emb.onnx")
    assert index_bounds(m) == {"types": 2, "ids": 500}
    rep = benchmark_models([tmp_path / "emb.onnx"], batch_size=4, max_time_s=0.05, min_runs=5, warmup=2,
                           measure_memory=False)  # fmt: skip
    assert rep.models[0].p50_ms > 0  # without the bound, values up to 99 index a 2-row table and ORT fails
    from tensorslim.evaluate.data import generate_inputs
    from tensorslim.runtime.ort import OrtRuntime

    rt = OrtRuntime(tmp_path / "emb.onnx")
    assert rt.index_bounds() == {"types": 2, "ids": 500}
    ds = generate_inputs(rt.inputs, num_samples=64, bounds=rt.index_bounds())
    assert ds.inputs["types"].max() <= 1 and ds.inputs["ids"].max() >= 2
    rt.run(ds.inputs)
