"""The .tslim coders: rANS round trips, the per-tensor choice, and never a larger file than zstd -19 or lzma."""

from __future__ import annotations

import hashlib
import json
import lzma
from pathlib import Path

import numpy as np
import onnx
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from models import F, make, rng
from tensorslim.algorithms.entropy import (
    LZMA_PRESET,
    DecodeError,
    byte_planes,
    decode,
    encode,
    pack_symbols,
    rans_decode,
    rans_encode,
    unpack_symbols,
)
from tensorslim.errors import InputError
from tensorslim.pack import PackConfig, pack_model, unpack_model
from tensorslim.pack import format as pack_format
from tensorslim.pack.format import read_container, write_container


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([1, 2, 4, 8]),
    st.integers(1, 20000),
    st.sampled_from([(1, 1, 0), (1, 1, 1), (1, 32, 0), (3, 5, 1), (64, 7, 0)]),
    st.integers(0, 9),
)
def test_rans_round_trips(bits: int, n: int, model: tuple[int, int, int], seed: int) -> None:
    sym = np.clip(np.round(rng(seed).normal(0, 1 << (bits - 1), n)), 0, (1 << bits) - 1).astype(np.uint8)
    data = pack_symbols(sym, bits)
    full = unpack_symbols(data, bits, len(data) * 8 // bits)
    payload = rans_encode(full, bits, *model)
    assert rans_decode(payload, len(data)) == data


def test_rans_refuses_corrupt_payloads() -> None:
    sym = rng(0).integers(0, 16, 50000).astype(np.uint8)
    data = pack_symbols(sym, 4)
    payload = rans_encode(sym, 4, 1, 32, 1)
    for bad in (payload[:-2], payload[:20], payload[:-40] + bytes(40)):
        with pytest.raises(DecodeError):
            rans_decode(bad, len(data))
    with pytest.raises(DecodeError):
        rans_decode(payload, len(data) + 2)  # more symbols than were coded


def test_rans_beats_zstd_and_lzma_on_int4_codes() -> None:
    """Gaussian int4 codes whose spread depends on the position in a 32-block: the context model pays off."""
    r = rng(3)
    spread = np.tile(np.linspace(0.5, 3.0, 32), 4096)
    codes = (np.clip(np.round(r.normal(0, spread)), -8, 7).astype(np.int64) % 16).astype(np.uint8)
    data = pack_symbols(codes, 4)
    codec, payload = encode(data, codecs=("zstd", "lzma", "rans"), symbol_bits=4, contexts=((1, 1), (1, 32)))
    assert codec == "rans" and decode(codec, payload, len(data)) == data
    assert len(payload) < 0.97 * min(len(zstandard.ZstdCompressor(level=19).compress(data)), len(lzma.compress(data)))


def _variant(name: str, tmp: Path) -> Path:
    """The bundled digits CNN, float or quantized one of the ways tensorslim quantizes it."""
    import tensorslim as ts
    from tensorslim.examples import example_calib_data_path, example_model_path
    from tensorslim.passes.blockwise_quant import BlockQuantConfig
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig
    from tensorslim.passes.float16 import Float16Config
    from tensorslim.passes.static_quant import StaticQuantConfig

    src = Path(example_model_path())
    if name == "float":
        return src
    calib = ts.Dataset({"input": np.load(example_calib_data_path())["input"][:16]})
    cfg, data = {
        "dynamic": (None, None),
        "weight_only": (DynamicQuantConfig(form="weight_only"), None),
        "int4": (BlockQuantConfig(), None),
        "int4_gptq": (BlockQuantConfig(), calib),
        "fp16": (Float16Config(), None),
        "static": (StaticQuantConfig(), calib),
        "pruned": (None, None),
    }[name]
    if name == "pruned":  # magnitude pruning by a mask multiply: half the zeros are -0.0
        from tensorslim.passes.prune import PruneConfig, PrunePass

        onnx.save(PrunePass(PruneConfig(sparsity=0.5))(onnx.load(str(src))).model, str(tmp / "pruned.onnx"))
        return tmp / "pruned.onnx"
    ts.quantize(src, tmp / f"{name}.onnx", config=cfg, data=data)
    return tmp / f"{name}.onnx"


FAST = ["int4"]


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=() if n in FAST else pytest.mark.slow)
     for n in ("float", "dynamic", "weight_only", "int4", "int4_gptq", "fp16", "static", "pruned")],
)  # fmt: skip
def test_pack_is_smaller_than_zstd_and_lzma_and_bit_exact(name: str, tmp_path: Path) -> None:
    src = _variant(name, tmp_path)
    raw = src.read_bytes()
    rep = pack_model(src, tmp_path / "m.tslim", config=PackConfig(compare=True))
    assert rep.baselines["zstd-19"] == len(zstandard.ZstdCompressor(level=19).compress(raw))
    assert rep.baselines["lzma-9e"] == len(lzma.compress(raw, preset=LZMA_PRESET))
    assert rep.file_bytes == (tmp_path / "m.tslim").stat().st_size
    assert rep.file_bytes < min(rep.baselines.values()), (rep.file_bytes, rep.baselines)
    unpack_model(tmp_path / "m.tslim", tmp_path / "u.onnx")
    assert hashlib.sha256((tmp_path / "u.onnx").read_bytes()).digest() == hashlib.sha256(raw).digest()
    c = read_container(tmp_path / "m.tslim")
    assert c.version == pack_format.FORMAT_VERSION == 3
    for entry in c.manifest["tensors"]:  # the choice per tensor and per stream is recorded
        assert entry["encoding"] in ("symbols", "palette", "sparse", "sparse_signed", "planes", "bytes")
        assert all(s["codec"] in ("raw", "zstd", "lzma2", "rans") for s in entry["streams"])
    assert c.manifest["graph"]["codec"] in ("raw", "zstd", "lzma2")


def test_int4_and_typed_field_tensors_round_trip_bit_exact(tmp_path: Path) -> None:
    """An INT4 weight (only its bytes are stored) and tensors kept in float_data / int32_data, not raw_data."""
    codes = np.clip(np.round(rng(1).normal(8, 2.5, 64 * 96)), 0, 15).astype(np.uint8)
    m = make([helper.make_node("Identity", ["x"], ["y"], name="id")], [("x", F, [2])], [("y", F, [2])])
    m.graph.initializer.extend([
        helper.make_tensor("w4", TensorProto.UINT4, [64, 96], pack_symbols(codes, 4), raw=True),
        helper.make_tensor("f", TensorProto.FLOAT, [1000], rng(2).standard_normal(1000).astype(np.float32).tolist()),
        helper.make_tensor("h", TensorProto.FLOAT16, [1500],
                           rng(3).standard_normal(1500).astype(np.float16).view(np.uint16).tolist()),
    ])  # fmt: skip
    src = tmp_path / "m.onnx"
    src.write_bytes(m.SerializeToString())
    pack_model(src, tmp_path / "m.tslim")
    entries = {e["name"]: e for e in read_container(tmp_path / "m.tslim").manifest["tensors"]}
    assert entries["w4"]["encoding"] == "bytes" and entries["w4"]["streams"][0]["codec"] == "rans"
    assert entries["f"]["field"] == "float_data" and entries["h"]["field"] == "int32_data"
    unpack_model(tmp_path / "m.tslim", tmp_path / "u.onnx")
    assert (tmp_path / "u.onnx").read_bytes() == src.read_bytes()


def test_version_1_files_still_unpack(tmp_path: Path) -> None:
    """A file in the first layout (every packable tensor listed in graph order, no index) reads as before."""
    vals = {"w": rng(0).standard_normal((16, 16)).astype(np.float32), "k": np.arange(4, dtype=np.int64)}
    m = make([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [("x", F, [1, 16])], [("y", F, [1, 16])], vals)
    graph = onnx.ModelProto()
    graph.CopyFrom(m)
    body, entries = bytearray(), []
    for t in graph.graph.initializer:
        arr = numpy_helper.to_array(t)
        payload = zstandard.ZstdCompressor(level=3).compress(byte_planes(arr.tobytes(), arr.itemsize))
        stream = {"role": "data", "codec": "zstd", "offset": len(body), "length": len(payload), "size": arr.nbytes}
        body.extend(payload)
        entries.append(
            {
                "name": t.name,
                "dtype": int(t.data_type),
                "dims": list(t.dims),
                "encoding": "planes",
                "itemsize": arr.itemsize,
                "streams": [stream],
            }
        )
        t.ClearField("raw_data")
    g = graph.SerializeToString()
    body.extend(g)
    gs = {"role": "graph", "codec": "raw", "offset": len(body) - len(g), "length": len(g), "size": len(g)}
    manifest = {"format": "tensorslim-pack", "graph": gs, "tensors": entries, "weights": 256}
    old = pack_format.FORMAT_VERSION
    try:
        pack_format.FORMAT_VERSION = 1
        write_container(tmp_path / "old.tslim", manifest, bytes(body))
    finally:
        pack_format.FORMAT_VERSION = old
    assert read_container(tmp_path / "old.tslim").version == 1
    out = unpack_model(tmp_path / "old.tslim")
    for t in out.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(t), vals[t.name])


def test_a_manifest_entry_naming_no_tensor_is_refused(tmp_path: Path) -> None:
    m = make([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [("x", F, [1, 64])], [("y", F, [1, 64])],
             {"w": rng(0).standard_normal((64, 64)).astype(np.float32)})  # fmt: skip
    pack_model(m, tmp_path / "m.tslim")
    c = read_container(tmp_path / "m.tslim")
    manifest = json.loads(json.dumps(c.manifest))
    manifest["tensors"][0]["index"] = 99
    write_container(tmp_path / "bad.tslim", manifest, c.body)
    with pytest.raises(InputError, match="names no tensor of the graph"):
        unpack_model(tmp_path / "bad.tslim")


def test_cli_pack_compare_reports_zstd_lzma_and_gzip(tmp_path: Path) -> None:
    from models import cli, mlp_model
    from tensorslim.backends.onnx import save_model

    model, _ = mlp_model()
    src = save_model(model, tmp_path / "m.onnx")
    r = cli("pack", str(src), "-o", str(tmp_path / "m.tslim"), "--compare", "--json", "-")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert set(rep["baselines"]) == {"zstd-19", "lzma-9e", "gzip-9"}
    assert rep["file_bytes"] == (tmp_path / "m.tslim").stat().st_size < min(rep["baselines"].values())
    r = cli("pack", str(src), "-o", str(tmp_path / "t.tslim"), "--compare")
    assert r.returncode == 0 and "lzma-9e of the ONNX file" in r.stdout and "zstd-19 of the ONNX file" in r.stdout


def test_negative_zeros_of_a_sparse_tensor_survive(tmp_path: Path) -> None:
    w = rng(5).standard_normal(4096).astype(np.float16)
    w[::2] = 0.0
    w[1::4] = -0.0
    m = make([helper.make_node("Identity", ["x"], ["y"], name="id")], [("x", F, [2])], [("y", F, [2])], {"w": w})
    pack_model(m, tmp_path / "m.tslim")
    out = unpack_model(tmp_path / "m.tslim")
    assert numpy_helper.to_array(out.graph.initializer[0]).view(np.uint16).tolist() == w.view(np.uint16).tolist()
    from tensorslim.pack.tensors import encode_tensor

    enc = encode_tensor(m.graph.initializer[0])
    assert enc is not None
    # zeros of both signs are dropped from the values (one sign bit each), not stored as values
    assert enc.entry["encoding"] == "sparse_signed" and enc.entry["nonzero"] == 1024


def test_a_small_model_is_one_stream_when_that_is_smaller(tmp_path: Path) -> None:
    """Many small tensors that share their bytes: coded one by one they lose the shared context (and pay a
    manifest entry each), so the whole file is stored as one stream, still bit-exact; only the container's
    header separates it from zstd/lzma of the file."""
    base = rng(7).integers(-128, 128, 3000).astype(np.int8)
    vals = {f"w{i}": np.roll(base, i) for i in range(12)}  # the same bytes shifted: an LZ coder sees them once
    nodes = [helper.make_node("Identity", ["x"], ["y"], name="id")]
    m = make(nodes, [("x", F, [2])], [("y", F, [2])], vals)
    src = tmp_path / "m.onnx"
    onnx.save(m, src)
    apart = pack_model(src, tmp_path / "a.tslim", config=PackConfig(single_stream=False))
    rep = pack_model(src, tmp_path / "m.tslim", config=PackConfig(compare=True))
    assert rep.file_bytes < apart.file_bytes
    assert rep.file_bytes < min(rep.baselines["zstd-19"], rep.baselines["lzma-9e"]) + 256
    assert read_container(tmp_path / "m.tslim").manifest["tensors"] == []
    unpack_model(tmp_path / "m.tslim", tmp_path / "u.onnx")
    assert (tmp_path / "u.onnx").read_bytes() == src.read_bytes()
