"""ONNX Runtime's old static int8 path, as the benchmarks compare against it: QOperator, uint8, per channel.

``quant_pre_process`` (symbolic shape inference and ONNX Runtime's basic graph optimizations, which also fold
weights held in ``Constant`` nodes into initializers), then ``quantize_static(quant_format=QOperator,
per_channel=True, activation_type=QUInt8, weight_type=QUInt8)`` with MinMax calibration (ORT's default) over the
given samples, one at a time. QOperator writes ``QLinearConv`` / ``QLinearMatMul`` / ``QLinearAdd`` ... nodes
directly instead of Q/DQ pairs for ONNX Runtime to fuse. The float model's metadata (RapidOCR's rec keeps its
character list there) is copied onto the result, since ``quant_pre_process`` drops it.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

import realmodels as rm

Feeds = Mapping[str, np.ndarray]


class FeedsReader:
    """``CalibrationDataReader``: one sample (batch 1) at a time from arrays with samples along axis 0."""

    def __init__(self, calib: Feeds, names: Sequence[str]) -> None:
        n = len(next(iter(calib.values())))
        self._it = iter([{k: np.asarray(calib[k][i : i + 1]) for k in names} for i in range(n)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def copy_metadata(src: Path, dst: Path) -> None:
    """Put ``src``'s ``metadata_props`` on ``dst`` where ``dst`` lacks them (rewrites ``dst`` in place)."""
    import onnx

    have = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    model = onnx.load(str(dst))
    missing = {k: v for k, v in have.items() if k not in {p.key for p in model.metadata_props}}
    if missing:
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **missing})
        onnx.save(model, str(dst))


@contextlib.contextmanager
def _root_log_level(level: int) -> Iterator[None]:
    """ONNX Runtime's quantizer logs one INFO line per tensor on the root logger; keep warnings only."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(old, level))
    try:
        yield
    finally:
        root.setLevel(old)


def quantize_qoperator_u8(src: Path, dst: Path, calib: Feeds) -> str:
    """``quant_pre_process`` then ``quantize_static`` QOperator, per-channel uint8 weights and activations.

    Returns:
        A note: empty, or what had to give (ONNX Runtime's symbolic shape inference fails on some graphs, e.g.
        PaddleOCR's ``Concat`` on a non-zero axis of a shape tensor; the pre-processing is then rerun with
        ``skip_symbolic_shape=True``, ONNX's own shape inference only).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    names = [i.name for i in rm.make_session(src).get_inputs()]
    note = ""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    with tempfile.TemporaryDirectory() as tmp, rm.warnings_quiet(), _root_log_level(logging.WARNING):
        pre = Path(tmp) / "pre.onnx"
        try:
            with contextlib.chdir(tmp):  # a failed symbolic inference dumps its model into the working directory
                quant_pre_process(str(src), str(pre))
        except Exception as exc:  # ORT's shape inference raises bare AssertionErrors
            why = (str(exc).strip().splitlines() or [""])[0][:80]
            note = (
                f"quant_pre_process: symbolic shape inference failed ({type(exc).__name__}{': ' + why if why else ''})"
            )
            note += ", reran with skip_symbolic_shape=True"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(dst), FeedsReader(calib, names), quant_format=QuantFormat.QOperator, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
        )  # fmt: skip
    copy_metadata(src, dst)
    return note
