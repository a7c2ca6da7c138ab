"""Small CLI contracts: --version, the --mode table behind help and validation, MB = 10^6 bytes, messages."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx

from models import cli, mlp_model
from tensorslim import __version__
from tensorslim.modes import ONNX_MODES, TFLITE_MODES

ROOT = Path(__file__).resolve().parent.parent


def _help(cmd: str) -> str:
    """The command's --help as one line of words (rich's box characters removed)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", cli(cmd, "--help").stdout).split())


def test_version() -> None:
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"tensorslim {__version__}"


def test_quantize_help_lists_every_mode_the_code_accepts(tmp_path: Path) -> None:
    from tensorslim.backends.tflite.quantize import TfliteMode
    from tensorslim.commands.quantize import _onnx_config

    assert list(TFLITE_MODES) == [m.value for m in TfliteMode]
    text = _help("quantize")
    for mode in ONNX_MODES:
        assert f"{mode}:" in text, mode
        data = tmp_path if mode == "static" else None  # static needs data; the others build without
        cfg = _onnx_config(mode, form="auto", scheme=None, granularity="per_channel", range_method=None, ops=None,
                           exclude=(), min_size=None, weight_encoding="auto", bits=4, block_size=32, method="auto",
                           accuracy_level=4, data=data)  # fmt: skip
        assert cfg is not None
    assert "static:" in text.split("For .tflite")[0]  # static is an ONNX mode too
    assert "Conv dequantized at load" in text  # int4 is not "MatMul/Gather" only
    m = tmp_path / "m.onnx"
    onnx.save(mlp_model()[0], m)
    r = cli("quantize", str(m), "-o", str(tmp_path / "q.onnx"), "--mode", "int3")
    assert r.returncode == 2 and ", ".join(ONNX_MODES) in r.stderr


def test_static_quantize_counts_only_the_models_own_weights(tmp_path: Path) -> None:
    model, _ = mlp_model(hidden=128)
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32))
    r = cli("quantize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q.onnx"), "--mode", "static", "--data",
            str(tmp_path / "c.npz"), "--no-check-speed", "--no-latency-check")  # fmt: skip
    assert r.returncode == 0, r.stderr
    n_weights = len(model.graph.initializer)  # W1, B1, W2, B2
    got = re.search(r"quantized (\d+) of (\d+) weights", r.stdout)
    assert got is not None and int(got.group(2)) == n_weights and int(got.group(1)) == 2, r.stdout


def test_bench_names_a_missing_file_like_every_command(tmp_path: Path) -> None:
    for args in (("bench", str(tmp_path / "nope.onnx")), ("bench", str(tmp_path / "nope.tslim"))):
        r = cli(*args)
        assert r.returncode == 2 and "no such file; check the path" in r.stderr, r.stderr


def test_bench_megabytes_are_10_to_the_6_bytes(tmp_path: Path) -> None:
    from tensorslim.benchmark import benchmark_models, render_bench_table

    w = np.ones((512, 1024), np.float32)  # 2,097,152 bytes: 2.10 MB, 2.00 MiB
    from models import F, make

    m = make([onnx.helper.make_node("MatMul", ["x", "W"], ["y"])], [("x", F, [1, 512])], [("y", F, [1, 1024])],
             {"W": w})  # fmt: skip
    onnx.save(m, tmp_path / "big.onnx")
    rep = benchmark_models([tmp_path / "big.onnx"], max_time_s=0.05, min_runs=3, measure_memory=False)
    table = render_bench_table(rep)
    col = [c.header for c in table.columns].index("weights MB")
    assert list(table.columns[col].cells) == ["2.10"]
    assert "MB = 10^6 bytes" in str(table.caption)


def test_output_folder_is_ignored_by_git() -> None:
    lines = (ROOT / ".gitignore").read_text().splitlines()
    assert "tensorslim-out/" in lines


def test_optimize_help_says_how_latency_is_taken() -> None:
    text = _help("optimize")
    assert "bench's harness" in text


def test_fp16_ops_is_an_allow_list_like_every_mode(tmp_path: Path) -> None:
    """``--ops`` names the op types to convert in fp16 too (it was a block list before issue 17)."""
    onnx.save(mlp_model()[0], tmp_path / "m.onnx")

    def f16_ops(*ops: str) -> list[str]:
        """The op types that compute in float16 in the output (their inputs are cast to float16)."""
        out = tmp_path / f"{'-'.join(ops) or 'all'}.onnx"
        r = cli("quantize", str(tmp_path / "m.onnx"), "-o", str(out), "--mode", "fp16", "--no-check-speed",
                *(("--ops", ",".join(ops)) if ops else ()))  # fmt: skip
        assert r.returncode == 0, r.stderr
        g = onnx.load(out).graph
        to_f16 = {o for n in g.node if n.op_type == "Cast" for o in n.output
                  if onnx.helper.get_attribute_value(n.attribute[0]) == onnx.TensorProto.FLOAT16}  # fmt: skip
        return [n.op_type for n in g.node if n.op_type != "Cast" and any(i in to_f16 for i in n.input)]

    assert f16_ops() == ["Relu"]
    assert f16_ops("Relu") == ["Relu"]
    assert f16_ops("Add", "Mul") == []  # Relu is not on the list: it stays float32 (before: only Add, Mul did)
    r = cli("quantize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "x.onnx"), "--mode", "fp16", "--ops", "Frob")
    assert r.returncode == 2 and "--ops: 'Frob' is not an op type fp16 converts" in r.stderr, r.stderr
    assert "Comma-separated op types to quantize" in _help("quantize") and "(fp16: the op types converted" in _help(
        "quantize"
    )
