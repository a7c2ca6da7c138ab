"""The .tslim format: entropy coding, bit-exact round trips, hostile files, the CLI and .tslim in bench/eval."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from models import F, cli, conv_model, make, mlp_model, rng, run
from tensorslim.algorithms.entropy import decode, encode, pack_symbols, unpack_symbols
from tensorslim.backends.onnx import save_model
from tensorslim.errors import ConfigError, InputError
from tensorslim.pack import PackConfig, pack_model, unpack_model
from tensorslim.pack.format import MAGIC, checksum, read_container, write_container
from tensorslim.pack.tensors import iter_tensors
from tensorslim.passes.cluster import ClusterConfig, ClusterPass
from tensorslim.passes.prune import PruneConfig, PrunePass


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000), st.sampled_from([("zstd",), ("lzma",), ("zstd", "lzma")]))
def test_entropy_coder_round_trips_arbitrary_bytes(data: bytes, codecs: tuple[str, ...]) -> None:
    codec, payload = encode(data, codecs=codecs, zstd_level=3)
    assert len(payload) <= len(data) or codec == "raw"
    assert decode(codec, payload, len(data)) == data


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 4, 8]), st.integers(0, 300), st.integers(0, 9))
def test_symbol_packing_round_trips(bits: int, n: int, seed: int) -> None:
    s = rng(seed).integers(0, 1 << bits, n).astype(np.uint8)
    packed = pack_symbols(s, bits)
    assert len(packed) == -(-n * bits // 8)
    np.testing.assert_array_equal(unpack_symbols(packed, bits, n), s)


def _mixed_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Float, sparse float, fp16, int8, uint8 indices, int64 and a Constant node, all in one graph."""
    model, feeds = conv_model()
    pruned = PrunePass(PruneConfig(sparsity=0.6))(model).model
    clustered = ClusterPass(ClusterConfig(clusters=16, granularity="per_channel", codebook_dtype="float16"))(
        pruned
    ).model
    g = clustered.graph
    extra = rng(1).integers(-8, 8, (40,)).astype(np.int8)
    g.initializer.append(numpy_helper.from_array(extra, "unused_int8"))
    g.node.append(helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.float32(2.0).reshape(1))))
    g.node.append(helper.make_node("Mul", ["y", "c"], ["y2"], name="scale"))
    g.output.append(helper.make_tensor_value_info("y2", F, ["b", 32, 8, 8]))
    return clustered, feeds


def _tensors(m: onnx.ModelProto) -> dict[str, tuple[str, bytes]]:
    return {t.name: (str(numpy_helper.to_array(t).dtype), numpy_helper.to_array(t).tobytes()) for t in iter_tensors(m)}


def test_the_bytes_do_not_depend_on_the_encoding_threads(tmp_path: Path) -> None:
    """Tensors are encoded side by side (largest first) and laid out in model order: one thread or three, the
    same file."""
    model, _ = _mixed_model()
    src = save_model(model, tmp_path / "m.onnx")
    files = []
    for workers in (1, 3):
        out = tmp_path / f"m{workers}.tslim"
        pack_model(src, out, config=PackConfig(single_stream=False, workers=workers))
        files.append(out.read_bytes())
    assert files[0] == files[1]
    with pytest.raises(ConfigError, match="workers"):
        PackConfig(workers=-1)


def test_round_trip_is_bit_exact_and_runnable(tmp_path: Path) -> None:
    model, feeds = _mixed_model()
    src = save_model(model, tmp_path / "m.onnx")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    rep = pack_model(src, tmp_path / "m.tslim", config=PackConfig(single_stream=False))  # the tensor streams
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest  # the input is never modified
    assert rep.file_bytes == (tmp_path / "m.tslim").stat().st_size < src.stat().st_size
    assert {"symbols", "graph"} <= set(rep.parts) and rep.bits_per_weight < 8
    out = unpack_model(tmp_path / "m.tslim", tmp_path / "u.onnx")
    assert _tensors(out) == _tensors(model)
    loaded = onnx.load(str(tmp_path / "u.onnx"))
    onnx.checker.check_model(loaded)
    assert [n.op_type for n in loaded.graph.node] == [n.op_type for n in model.graph.node]
    for a, b in zip(run(loaded, feeds), run(model, feeds), strict=True):
        np.testing.assert_array_equal(a, b)


def test_pack_bytes_are_deterministic(tmp_path: Path) -> None:
    model, _ = _mixed_model()
    pack_model(model, tmp_path / "a.tslim")
    pack_model(model, tmp_path / "b.tslim")
    assert (tmp_path / "a.tslim").read_bytes() == (tmp_path / "b.tslim").read_bytes()


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    model, _ = mlp_model()
    pack_model(model, tmp_path / "m.tslim")
    return tmp_path / "m.tslim"


def _rewrite(path: Path, manifest_edit=None, version: int | None = None) -> None:
    """Re-write a container with an edited manifest or version and a *valid* checksum (a crafted file)."""
    raw = path.read_bytes()
    head = struct.Struct("<8sHHIQ32s")
    magic, ver, flags, mlen, blen, _ = head.unpack(raw[: head.size])
    mraw = raw[head.size : head.size + mlen]
    manifest = json.loads(zstandard.ZstdDecompressor().decompress(mraw) if flags & 1 else mraw)  # bit 0: zstd
    body = raw[head.size + mlen :]
    if manifest_edit:
        manifest_edit(manifest)
    mbytes = json.dumps(manifest).encode()
    digest = checksum(version or ver, flags & ~1, mbytes, body)
    path.write_bytes(head.pack(magic, version or ver, flags & ~1, len(mbytes), len(body), digest) + mbytes + body)


def test_tampered_file_fails_its_checksum(packed: Path, tmp_path: Path) -> None:
    raw = bytearray(packed.read_bytes())
    raw[-10] ^= 0xFF
    packed.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="checksum mismatch \\(the file is corrupt or was modified\\)"):
        unpack_model(packed, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_truncated_file(packed: Path, tmp_path: Path) -> None:
    packed.write_bytes(packed.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated or corrupt"):
        unpack_model(packed, tmp_path / "out.onnx")
    packed.write_bytes(MAGIC[:4])
    with pytest.raises(InputError, match="not a tensorslim pack \\(.tslim\\) file, or truncated"):
        unpack_model(packed)
    assert not (tmp_path / "out.onnx").exists()


def test_newer_format_version(packed: Path) -> None:
    _rewrite(packed, version=7)
    with pytest.raises(InputError, match="format version 7, newer than this tensorslim reads \\(up to 3\\)"):
        unpack_model(packed)


@pytest.mark.parametrize("version", [2, 3])
def test_the_current_and_the_previous_format_are_read(version: int, tmp_path: Path, monkeypatch) -> None:
    from tensorslim.pack import format as pack_format

    model, _ = mlp_model()
    src = save_model(model, tmp_path / "m.onnx", stamp_lowest=False)
    monkeypatch.setattr(pack_format, "FORMAT_VERSION", version)
    pack_model(src, tmp_path / "m.tslim")
    monkeypatch.undo()
    raw = (tmp_path / "m.tslim").read_bytes()
    head = struct.Struct("<8sHHIQ32s")
    _, ver, flags, mlen, _, digest = head.unpack(raw[: head.size])
    assert ver == version
    if version == 2:  # the version-2 checksum: manifest and body only, as written before version 3
        assert digest == hashlib.sha256(raw[head.size :]).digest()
    else:
        assert digest == hashlib.sha256(raw[: head.size - 32] + raw[head.size :]).digest()
    unpack_model(tmp_path / "m.tslim", tmp_path / "u.onnx")
    assert (tmp_path / "u.onnx").read_bytes() == src.read_bytes()


def test_decompression_bomb_is_refused_before_decoding(packed: Path, tmp_path: Path) -> None:
    def inflate(m: dict) -> None:
        m["tensors"][0]["streams"][0]["size"] = 1 << 40

    _rewrite(packed, inflate)
    with pytest.raises(InputError, match="far beyond what a .*-byte file can hold"):
        unpack_model(packed, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_a_lying_stream_size_stops_at_the_declared_size(packed: Path) -> None:
    def shrink(m: dict) -> None:
        for t in m["tensors"]:
            for s in t["streams"]:
                if s["size"] > 1000:
                    s["size"] //= 2

    _rewrite(packed, shrink)
    with pytest.raises(InputError, match="where .* are needed; corrupt file|declares"):
        unpack_model(packed)


def test_container_header_fields(packed: Path) -> None:
    c = read_container(packed)
    assert c.version == 3 and c.manifest["format"] == "tensorslim-pack" and c.file_bytes == packed.stat().st_size


def test_cli_prune_cluster_pack_unpack_and_eval(tmp_path: Path) -> None:
    model, feeds = mlp_model()
    src = save_model(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=rng(2).standard_normal((64, 32)).astype(np.float32))
    r = cli("prune", str(src), "-o", str(tmp_path / "p.onnx"), "--sparsity", "0.5", "--data", str(tmp_path / "d.npz"))
    assert r.returncode == 0, r.stderr
    r = cli("cluster", str(tmp_path / "p.onnx"), "-o", str(tmp_path / "c.onnx"), "--clusters", "16", "--per-channel")
    assert r.returncode == 0, r.stderr
    r = cli("pack", str(tmp_path / "c.onnx"), "-o", str(tmp_path / "c.tslim"), "--json", "-")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["file_bytes"] == (tmp_path / "c.tslim").stat().st_size
    r = cli("unpack", str(tmp_path / "c.tslim"), "-o", str(tmp_path / "u.onnx"))
    assert r.returncode == 0, r.stderr
    assert _tensors(onnx.load(str(tmp_path / "u.onnx"))) == _tensors(onnx.load(str(tmp_path / "c.onnx")))
    r = cli("eval", str(src), str(tmp_path / "c.tslim"), "--data", str(tmp_path / "d.npz"), "--json", "-")
    assert r.returncode == 0, r.stderr
    r = cli("prune", str(src), "-o", str(tmp_path / "s.onnx"), "--pattern", "channel", "--sparsity", "0.5")
    assert r.returncode == 0, r.stderr
    assert numpy_helper.to_array(onnx.load(str(tmp_path / "s.onnx")).graph.initializer[0]).shape == (32, 32)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "--sparsity", "1.5"], "--sparsity 1.5: must be in [0, 1)"),
        (["cluster", "--clusters", "1"], "--clusters 1: must be from 2 to 256"),
        (["prune", "--pattern", "3:4", "--sparsity", "0.5"], "sparsity: 0.5 conflicts with pattern 3:4"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(args: list[str], message: str, tmp_path: Path) -> None:
    model, _ = mlp_model()
    src = save_model(model, tmp_path / "m.onnx")
    r = cli(args[0], str(src), "-o", str(tmp_path / "o.onnx"), *args[1:])
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_cli_unpack_of_a_tampered_file_exits_2(packed: Path, tmp_path: Path) -> None:
    raw = bytearray(packed.read_bytes())
    raw[len(raw) // 2] ^= 1
    packed.write_bytes(bytes(raw))
    r = cli("unpack", str(packed), "-o", str(tmp_path / "o.onnx"))
    assert r.returncode == 2 and "checksum mismatch" in r.stderr and len(r.stderr.strip().splitlines()) <= 3
    assert not (tmp_path / "o.onnx").exists()


def test_bench_times_a_tslim_and_reports_its_own_size(tmp_path: Path) -> None:
    from tensorslim.benchmark import benchmark_models

    model, _ = conv_model()
    src = save_model(model, tmp_path / "m.onnx")
    pack_model(ClusterPass(ClusterConfig(clusters=16))(model).model, tmp_path / "m.tslim")
    rep = benchmark_models([src, tmp_path / "m.tslim"], max_time_s=0.05, min_runs=3, measure_memory=False)
    assert rep.models[1].file_bytes == (tmp_path / "m.tslim").stat().st_size
    assert rep.models[1].path == str(tmp_path / "m.tslim")


def test_open_runtime_reads_tslim(packed: Path) -> None:
    from tensorslim.runtime.base import open_runtime

    rt = open_runtime(packed)
    x = rng(0).standard_normal((2, 32)).astype(np.float32)
    model, _ = mlp_model()
    np.testing.assert_array_equal(rt.run({"x": x})[0], run(model, {"x": x})[0])


def test_large_integer_types_round_trip(tmp_path: Path) -> None:
    vals = {"i64": np.arange(-500, 500, dtype=np.int64), "f64": rng(0).standard_normal(300)}
    nodes = [helper.make_node("Identity", ["x"], ["y"], name="id")]
    m = make(nodes, [("x", F, [2])], [("y", F, [2])], vals)
    pack_model(m, tmp_path / "t.tslim")
    out = unpack_model(tmp_path / "t.tslim")
    assert _tensors(out) == _tensors(m)
    assert out.graph.initializer[0].data_type == TensorProto.INT64


MINILM = Path(__file__).resolve().parents[1] / "benchmarks" / ".cache" / "all-minilm-l6-v2-opset17.onnx"


@pytest.mark.slow
@pytest.mark.skipif(not MINILM.exists(), reason="MiniLM export not cached (run benchmarks/minilm_pack.py once)")
def test_minilm_pack_round_trip_is_bit_exact_and_fast(tmp_path: Path) -> None:
    import time

    model = onnx.load(str(MINILM))
    cfg = ClusterConfig(clusters=16, granularity="per_channel", codebook_dtype="float16")
    clustered = save_model(ClusterPass(cfg)(model).model, tmp_path / "c.onnx")
    t0 = time.perf_counter()
    rep = pack_model(clustered, tmp_path / "c.tslim")
    t_pack = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = unpack_model(tmp_path / "c.tslim", tmp_path / "u.onnx")
    t_unpack = time.perf_counter() - t0
    assert t_pack < 10 and t_unpack < 10
    assert rep.file_bytes <= 0.125 * MINILM.stat().st_size and rep.bits_per_weight < 4.0
    assert _tensors(out) == _tensors(onnx.load(str(clustered)))


def test_compress_pipeline_reports_each_stage(tmp_path: Path) -> None:
    from tensorslim.api.compression import compress

    model, _ = mlp_model(hidden=64)
    src = save_model(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=rng(2).standard_normal((64, 32)).astype(np.float32))
    rep = compress(src, tmp_path / "m.tslim", sparsity=0.5, clusters=16, data=tmp_path / "d.npz")
    stages = [s.stage for s in rep.stages]
    assert stages[:3] == ["float", "prune", "cluster"] and stages[-1] == "pack"
    assert rep.stages[-1].bytes == (tmp_path / "m.tslim").stat().st_size < rep.stages[0].bytes / 2
    assert rep.stages[-1].cosine_mean == rep.stages[-2].cosine_mean  # packing is lossless
    with pytest.raises(InputError, match="name the output \\*.tslim"):
        compress(src, tmp_path / "m.onnx2")


# --- unpacking straight into a file (tensorslim.pack.wire) ---------------------------------------------------


def _every_kind_model() -> onnx.ModelProto:
    """Every encoding (symbols signed and not, palette, sparse, planes, bytes), typed fields, a Constant node and
    tensors inside the branches of an If (a subgraph), each large enough to get its own entry."""
    model, _ = _mixed_model()
    r = rng(7)
    g = model.graph
    big = r.standard_normal(2000).astype(np.float32)
    g.initializer.extend([
        numpy_helper.from_array(r.integers(-100, 100, 3000).astype(np.int8), "signed8"),
        numpy_helper.from_array(r.integers(0, 250, 3000).astype(np.uint8), "unsigned8"),
        numpy_helper.from_array(r.standard_normal(1200).astype(np.float64), "planes64"),
        helper.make_tensor("typed", TensorProto.FLOAT, [700], r.standard_normal(700).astype(np.float32).tolist()),
        helper.make_tensor("w4", TensorProto.INT4, [9000], pack_symbols(r.integers(0, 16, 9000), 4), raw=True),
        numpy_helper.from_array(r.choice(r.standard_normal(16), 3000).astype(np.float32), "palette16"),
        numpy_helper.from_array(np.where(r.random(4000) < 0.8, 0, r.standard_normal(4000)).astype(np.float32), "sp"),
    ])  # fmt: skip
    branch = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(big, "cbig"))]
    then_g = helper.make_graph(branch, "then", [], [helper.make_tensor_value_info("c", F, [2000])],
                               [numpy_helper.from_array(big * 2, "then_init")])  # fmt: skip
    else_g = helper.make_graph([helper.make_node("Identity", ["else_init"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", F, [2000])],
                               [numpy_helper.from_array(big * 3, "else_init")])  # fmt: skip
    g.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    g.node.append(helper.make_node("If", ["cond"], ["branch"], name="if", then_branch=then_g, else_branch=else_g))
    g.output.append(helper.make_tensor_value_info("branch", F, [2000]))
    return model


def test_unpack_file_writes_the_bytes_unpack_model_writes(tmp_path: Path) -> None:
    from tensorslim.pack import unpack_file

    model = _every_kind_model()
    src = save_model(model, tmp_path / "m.onnx", stamp_lowest=False)
    pack_model(src, tmp_path / "m.tslim", config=PackConfig(single_stream=False))
    encodings = {e["encoding"] for e in read_container(tmp_path / "m.tslim").manifest["tensors"]}
    assert encodings == {"symbols", "palette", "sparse", "planes", "bytes"}
    assert unpack_file(tmp_path / "m.tslim", tmp_path / "f.onnx") == tmp_path / "f.onnx"
    unpack_model(tmp_path / "m.tslim", tmp_path / "u.onnx")
    assert (tmp_path / "f.onnx").read_bytes() == (tmp_path / "u.onnx").read_bytes() == src.read_bytes()


def test_unpack_file_falls_back_when_the_wire_bytes_are_unusual(tmp_path: Path) -> None:
    from tensorslim.pack import unpack_file, wire

    model = _every_kind_model()
    pack_model(model, tmp_path / "m.tslim")
    c = read_container(tmp_path / "m.tslim")
    graph = c.stream(c.manifest["graph"])
    # the graph field given twice (protobuf merges the two): the parsed model is the same, the walk is not
    split = onnx.ModelProto()
    split.ParseFromString(graph)
    first = onnx.ModelProto(graph=onnx.GraphProto(name=split.graph.name)).SerializeToString()
    paths = [p for p, _ in wire.tensor_paths(split)]
    with pytest.raises(wire.Unsupported):
        wire.layout(first + graph, {paths[0]: (split.graph.initializer[0], b"")})
    manifest = json.loads(json.dumps(c.manifest))
    body = bytearray(c.body)
    manifest["graph"] = {"role": "graph", "codec": "raw", "offset": len(body), "length": len(first + graph),
                         "size": len(first + graph)}  # fmt: skip
    body += first + graph
    write_container(tmp_path / "odd.tslim", manifest, bytes(body))
    unpack_file(tmp_path / "odd.tslim", tmp_path / "f.onnx")
    unpack_model(tmp_path / "odd.tslim", tmp_path / "u.onnx")
    assert (tmp_path / "f.onnx").read_bytes() == (tmp_path / "u.onnx").read_bytes()


def _bomb(path: Path, size: int, encoding: str) -> Path:
    """A small .tslim whose one float32 tensor unpacks to ``size`` bytes of zeros (padded to pass the size cap)."""
    n = size // 4
    m = onnx.ModelProto(ir_version=8, opset_import=[helper.make_opsetid("", 13)])
    m.graph.name = "g"
    m.graph.initializer.append(TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[n]))
    m.graph.node.append(helper.make_node("Identity", ["W"], ["y"]))
    m.graph.output.append(helper.make_tensor_value_info("y", F, [n]))
    graph = m.SerializeToString()
    cobj = zstandard.ZstdCompressor(level=3, write_content_size=True).compressobj(size=size)
    chunk = bytes(16 << 20)
    payload = b"".join(cobj.compress(chunk[: min(len(chunk), size - i)]) for i in range(0, size, len(chunk)))
    payload += cobj.flush()
    gs = {"role": "graph", "codec": "raw", "offset": 0, "length": len(graph), "size": len(graph)}
    ds = {"role": "data", "codec": "zstd", "offset": len(graph), "length": len(payload), "size": size}
    entry = {"name": "W", "dtype": 1, "dims": [n], "index": 0, "streams": [ds], "encoding": encoding}
    if encoding == "planes":
        entry["itemsize"] = 4
    padding = bytes(range(256)) * (size // 2048 // 256 + 1)  # the reader's bound: 8 bytes per element per 4096x
    manifest = {"format": "tensorslim-pack", "graph": gs, "tensors": [entry], "weights": n}
    write_container(path, manifest, graph + payload + padding)
    return path


def _peak_rss_of_cli(*args: str) -> int:
    """Peak resident bytes of ``python -m tensorslim ARGS`` in a child process of its own."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "tensorslim", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read() if proc.stderr else ""
    return int(usage.ru_maxrss) * 1024


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs os.wait4 for a child's peak memory")
@pytest.mark.parametrize("encoding", ["planes", "bytes"])
def test_unpack_peak_memory_is_about_the_decoded_size(tmp_path: Path, encoding: str) -> None:
    """A ~70 KB file that unpacks to 128 MiB: before, the CLI peaked at ~4.3x the decoded size (the stream, the
    transposed planes, a copy, the protobuf's copy, the serialized model); now the data is held once."""
    size = 128 << 20
    bomb = _bomb(tmp_path / "bomb.tslim", size, encoding)
    assert bomb.stat().st_size < size // 1000
    tiny = _bomb(tmp_path / "tiny.tslim", 4096, encoding)
    base = _peak_rss_of_cli("unpack", str(tiny), "-o", str(tmp_path / "tiny.onnx"))
    peak = _peak_rss_of_cli("unpack", str(bomb), "-o", str(tmp_path / "big.onnx"))
    assert (tmp_path / "big.onnx").stat().st_size > size
    assert peak - base < 1.25 * size, f"peak {peak / 2**20:.0f} MiB, {base / 2**20:.0f} MiB without data"
    out = onnx.load(str(tmp_path / "big.onnx"))
    assert len(out.graph.initializer[0].raw_data) == size and not any(out.graph.initializer[0].raw_data[::4096])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sets RLIMIT_AS")
def test_unpack_without_the_memory_for_it_exits_2(tmp_path: Path) -> None:
    """Issue case: a 2.3 MB file ended in MemoryError (exit 3). Here the process may grow 256 MiB past its
    start-up size and the file unpacks to 1 GiB: exit 2, one line, nothing at -o."""
    import subprocess

    bomb = _bomb(tmp_path / "bomb.tslim", 1 << 30, "planes")
    code = (
        "import resource, sys\n"
        "import numpy, onnx, zstandard, psutil\n"
        "import tensorslim.pack, tensorslim.pack.wire, tensorslim.backends.onnx.io, tensorslim._files\n"
        "from tensorslim.commands import build_app\n"
        "size = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + (256 << 20), size + (256 << 20)))\n"
        "build_app()(args=sys.argv[1:], prog_name='tensorslim')\n"
    )
    out = tmp_path / "out.onnx"
    r = subprocess.run([sys.executable, "-c", code, "unpack", str(bomb), "-o", str(out)], capture_output=True,
                       text=True, check=False)  # fmt: skip
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    err = r.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "memory" in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
