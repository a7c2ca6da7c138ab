"""TFLite backend: reading and writing flatbuffers, bad files, weight enumeration, the LiteRT runtime."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import tflite_models as tm
from tensorslim.backends.tflite.io import is_tflite, load_model, model_from_bytes, save_model, serialize
from tensorslim.backends.tflite.weights import find_weights
from tensorslim.errors import InputError
from tensorslim.runtime.base import open_runtime
from tensorslim.runtime.litert import LiteRTRuntime


def _run(data: bytes | Path, x: np.ndarray) -> np.ndarray:
    rt = LiteRTRuntime(data)
    return rt.run({rt.inputs[0].name: x})[0]


def test_round_trip_is_deterministic_and_runs_identically(tmp_path: Path) -> None:
    data = tm.cnn()
    model = model_from_bytes(data)
    again = serialize(model)
    assert again == serialize(model_from_bytes(again))  # same model, same bytes
    x = tm.rng(1).random((3, 12, 12, 3)).astype(np.float32)
    np.testing.assert_array_equal(_run(data, x), _run(again, x))
    out = save_model(model, tmp_path / "m.tflite")
    assert out.read_bytes() == again
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tslim-")]  # no temp file left


def test_constant_buffers_are_16_byte_aligned() -> None:
    from ai_edge_litert import schema_py_generated as s

    data = serialize(model_from_bytes(tm.mlp()))
    m = s.Model.GetRootAsModel(data, 0)
    for i in range(m.BuffersLength()):
        b = m.Buffers(i)
        if b.DataLength():
            start = b._tab.Vector(b._tab.Offset(4))
            assert start % 16 == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"abc", "too small"),
        (b"this is plain text, not a model at all", "not a TFLite flatbuffer"),
        (b"\x00" * 64, "not a TFLite flatbuffer"),
    ],
)
def test_files_that_are_not_tflite_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "bad.tflite"
    p.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_model(p)


@pytest.mark.parametrize("keep", [0.97, 0.8, 0.5, 0.25, 0.1])
def test_truncated_files_give_a_clear_error(tmp_path: Path, keep: float) -> None:
    data = tm.cnn()
    p = tmp_path / "cut.tflite"
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match="truncated|corrupt"):
        load_model(p)


def test_unknown_schema_version_is_refused() -> None:
    m = model_from_bytes(tm.mlp())
    m.version = 2
    with pytest.raises(InputError, match="schema version 2"):
        model_from_bytes(serialize(m))


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "nope.tflite")
    with pytest.raises(InputError, match="is a folder"):
        load_model(tmp_path)


def test_format_is_detected_from_the_flatbuffer_identifier(tmp_path: Path) -> None:
    p = tmp_path / "model.bin"
    p.write_bytes(tm.mlp())
    assert is_tflite(p) and is_tflite(tmp_path / "x.tflite")
    rt = open_runtime(p)
    assert isinstance(rt, LiteRTRuntime)
    (tmp_path / "other.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(InputError, match="unknown model format"):
        open_runtime(tmp_path / "other.bin")


def test_weights_are_enumerated_with_op_axis_and_buffer() -> None:
    found = {w.name: w for w in find_weights(model_from_bytes(tm.cnn()))}
    conv, dw, fc = found["conv1/w"], found["dw/w"], found["fc/w"]
    assert [(u.op_type, u.position, u.channel_axis) for u in conv.uses] == [("CONV_2D", 1, 0)]
    assert [(u.op_type, u.channel_axis) for u in dw.uses] == [("DEPTHWISE_CONV_2D", 3)]
    assert [(u.op_type, u.channel_axis) for u in fc.uses] == [("FULLY_CONNECTED", 0)]
    assert not found["conv1/b"].weight_uses and not found["shift"].weight_uses
    assert conv.buffer != dw.buffer and conv.stored_bytes == conv.array.nbytes


def test_a_shared_buffer_is_one_weight_with_every_use() -> None:
    weights = find_weights(model_from_bytes(tm.shared_weights()))
    assert len(weights) == 1
    w = weights[0]
    assert len(w.tensors) == 2 and len(w.uses) == 3


def test_runtime_names_resizes_and_splits_batches() -> None:
    rt = LiteRTRuntime(tm.mlp())
    assert [i.name for i in rt.inputs] == ["x"] and rt.inputs[0].shape == (None, 64)
    x = tm.rng(2).standard_normal((5, 64)).astype(np.float32)
    out = rt.run({"x": x})[0]
    assert out.shape == (5, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    fixed = LiteRTRuntime(tm.matmul_and_deconv())  # fixed batch 1: batches run sample by sample
    xs = tm.rng(3).standard_normal((3, 6, 6, 8)).astype(np.float32)
    y = fixed.run({"x": xs})[0]
    np.testing.assert_allclose(y[1:2], fixed.run({"x": xs[1:2]})[0], rtol=1e-6)
    with pytest.raises(InputError, match="no value for input"):
        rt.run({"nope": x})


def test_input_file_is_never_modified(tmp_path: Path) -> None:
    from tensorslim.backends.tflite.quantize import quantize_tflite

    p = tmp_path / "m.tflite"
    p.write_bytes(tm.cnn())
    before = hashlib.sha256(p.read_bytes()).hexdigest()
    for mode in ("dynamic", "fp16"):
        quantize_tflite(p, tmp_path / f"{mode}.tflite", mode=mode)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == before
    with pytest.raises(InputError, match="output path is the input"):
        quantize_tflite(p, p, mode="dynamic")
