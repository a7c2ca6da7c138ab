"""Which layers lost the accuracy? Per-layer comparison of a float and a quantized model on real data.

Every node output of the float model that the quantized model still has (a quantizer keeps the float
tensor names for every output it does not replace) is exposed as a graph output of both models; both run
on the same batches and each matched tensor gets:

* ``sqnr_db``: SQNR of the quantized tensor against the float one (accumulated error up to that layer);
* ``added_sqnr_db``: the error this node *adds*: its noise-to-signal ratio minus the worst one of its matched
  inputs, as an SQNR (what the layer's SQNR would be if it were the only error source); the ranking uses it,
  lowest first;
* ``rmse_over_scale``: the TFLite quantization debugger's metric, RMSE divided by the tensor's
  quantization step (the model's static ``QuantizeLinear`` scale, else the dynamic step ``range / 255``);
  uniform rounding noise gives ``1/sqrt(12) ~ 0.29``; above ~0.7 the layer is suspect;
* ``peak_to_p999``: activation range outliers, ``max|x| / p99.9(|x|)`` of the float tensor.

The report ends with the ``tensorslim quantize ... --exclude REGEX`` command that keeps the worst layers
in float: the same ``--mode``, options and calibration data as the quantized model (recorded in its metadata
by ``quantize``, see :mod:`tensorslim.diagnostics.provenance`) plus the exclusions. Only layers that add a
finite error are ranked.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tensorslim.backends.onnx.io import load_model
from tensorslim.errors import InputError

__all__ = ["LayerError", "LayerReport", "diagnose_layers", "exclude_regex"]

HEALTHY_RMSE_OVER_SCALE = 1.0 / math.sqrt(12.0)
SUSPECT_RMSE_OVER_SCALE = 0.7


@dataclass
class LayerError:
    """Error of one matched tensor (the output of one float node)."""

    tensor: str
    node: str
    op_type: str
    sqnr_db: float
    added_sqnr_db: float
    rmse: float
    rmse_over_scale: float | None
    scale_source: str
    peak_to_p999: float
    weight: str | None = None


@dataclass
class LayerReport:
    """Per-layer errors, the worst layers and the command that keeps them in float."""

    float_model: str
    quant_model: str
    num_samples: int
    data_source: str
    layers: list[LayerError] = field(default_factory=list)
    worst: list[str] = field(default_factory=list)
    exclude_command: str = ""
    histograms: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    unmatched: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (infinite SQNR written as the string ``"inf"``)."""
        d = asdict(self)
        for layer in d["layers"]:
            for k in ("sqnr_db", "added_sqnr_db"):
                if isinstance(layer[k], float) and not math.isfinite(layer[k]):
                    layer[k] = str(layer[k])
        return d


def exclude_regex(node_names: list[str]) -> str:
    """An anchored regex matching exactly ``node_names`` (for ``--exclude``)."""
    return "^(" + "|".join(re.escape(n) for n in node_names) + ")$"


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> bytes:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    return m.SerializeToString()


def _float_outputs(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Node outputs of the float model that hold float tensors, by name, with their producer."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {vi.name: vi.type.tensor_type.elem_type for vi in (*inferred.graph.value_info, *inferred.graph.output)}
    except Exception:  # shape inference is a hint; unknown types are tried anyway
        types = {}
    out: dict[str, onnx.NodeProto] = {}
    for n in model.graph.node:
        if n.op_type in ("Constant", "Shape", "Size"):
            continue
        for o in n.output:
            if o and types.get(o, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT:
                out[o] = n
    return out


def _static_scales(model: onnx.ModelProto) -> dict[str, float]:
    inits = {t.name: t for t in model.graph.initializer}
    consts = {
        n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    }
    out: dict[str, float] = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 1:
            t = inits.get(n.input[1]) or consts.get(n.input[1])
            if t is not None:
                arr = onnx.numpy_helper.to_array(t)
                if arr.size == 1:
                    out[n.input[0]] = float(arr.reshape(()))
    return out


def _largest_weight(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> str | None:
    cands = [i for i in node.input if i in inits and inits[i].data_type == onnx.TensorProto.FLOAT]
    if not cands:
        return None
    return max(cands, key=lambda i: int(np.prod(inits[i].dims)) if inits[i].dims else 1)


def diagnose_layers(
    float_model: str | os.PathLike[str],
    quant_model: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    *,
    max_samples: int = 64,
    batch_size: int = 8,
    top: int = 5,
    progress: bool = False,
) -> LayerReport:
    """Compare every matched intermediate tensor of ``float_model`` and ``quant_model``.

    Args:
        float_model: The float ONNX model.
        quant_model: Its quantized version.
        data: ``.npz`` with one array per input (samples first); ``None`` generates inputs and says so.
        max_samples: Samples used at most.
        batch_size: Samples per inference call.
        top: How many worst layers to name in the exclude command.
        progress: Show a progress bar.

    Returns:
        The :class:`LayerReport`, layers in graph order.

    Raises:
        InputError: A file is missing or unreadable, the data does not fit, or no tensor names match.
    """
    from rich.progress import Progress

    from tensorslim.data import generate_runnable, load_data
    from tensorslim.runtime.ort import OrtRuntime

    fp, qp = Path(float_model), Path(quant_model)
    protos = []
    for p in (fp, qp):
        protos.append(load_model(p, check=False))
    fm, qm = protos
    f_out = _float_outputs(fm)
    q_names = {o for n in qm.graph.node for o in n.output}
    matched = [t for t in f_out if t in q_names]
    if not matched:
        raise InputError(f"{qp}: none of the float model's tensor names survive in it; is it a quantized {fp.name}?")
    ref = OrtRuntime(_with_outputs(fm, matched))
    cand = OrtRuntime(_with_outputs(qm, matched))
    if data is None:
        ds = generate_runnable(ref, num_samples=min(max_samples, 16), seed=0, bounds=ref.index_bounds())
    else:
        ds = load_data(data, ref.inputs, max_samples=max_samples)
    r_idx = {s.name: i for i, s in enumerate(ref.outputs)}
    c_idx = {s.name: i for i, s in enumerate(cand.outputs)}
    scales = _static_scales(qm)
    sig: dict[str, float] = defaultdict(float)
    noise: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    dyn_step: dict[str, float] = defaultdict(float)
    peaks: dict[str, list[float]] = defaultdict(list)
    n_batches = math.ceil(ds.num_samples / batch_size)
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("comparing layers", total=n_batches)
        for feeds, _ in ds.batches(batch_size):
            a_all, b_all = ref.run(feeds), cand.run(feeds)
            for t in matched:
                a = np.asarray(a_all[r_idx[t]], dtype=np.float64)
                b = np.asarray(b_all[c_idx[t]], dtype=np.float64)
                if a.shape != b.shape:
                    continue
                sig[t] += float(np.sum(a * a))
                noise[t] += float(np.sum((a - b) ** 2))
                count[t] += a.size
                if a.size:
                    dyn_step[t] = max(dyn_step[t], float(a.max() - min(a.min(), 0.0)) / 255.0)
                    absa = np.abs(a.ravel())
                    p999 = float(np.percentile(absa, 99.9))
                    peaks[t].append(float(absa.max()) / p999 if p999 > 0 else 1.0)
            bar.advance(task)
    inits = {t.name: t for t in fm.graph.initializer}
    sqnr = {t: _sqnr(sig[t], noise[t]) for t in matched if count[t]}
    layers = []
    for t in matched:
        if t not in sqnr:
            continue
        node = f_out[t]
        nsr_in = max((_nsr(sig[i], noise[i]) for i in node.input if i in sqnr), default=0.0)
        added = _nsr(sig[t], noise[t]) - nsr_in
        added_db = 10.0 * math.log10(1.0 / added) if added > 0 else math.inf
        rmse = math.sqrt(noise[t] / count[t])
        step = scales.get(t) or dyn_step.get(t) or 0.0
        layers.append(
            LayerError(
                tensor=t,
                node=node.name or t,
                op_type=node.op_type,
                sqnr_db=sqnr[t],
                added_sqnr_db=added_db,
                rmse=rmse,
                rmse_over_scale=rmse / step if step > 0 else None,
                scale_source="static" if t in scales else "dynamic",
                peak_to_p999=float(np.median(peaks[t])) if peaks[t] else 1.0,
                weight=_largest_weight(node, inits),
            )
        )
    # only layers that add a finite, positive error are ranked (an exact layer has nothing to keep in float)
    ranked = sorted((x for x in layers if x.weight and math.isfinite(x.added_sqnr_db)), key=lambda x: x.added_sqnr_db)
    worst = [x.node for x in ranked[:top]]
    rep = LayerReport(
        str(fp),
        str(qp),
        ds.num_samples,
        ds.source or ("generated" if data is None else str(data)),
        layers,
        worst,
        unmatched=len(f_out) - len(matched),
    )
    if worst:
        from tensorslim.diagnostics.provenance import infer_quantize, quantize_args

        args = quantize_args(infer_quantize(qm), None if data is None else str(data))
        rep.exclude_command = shlex.join(
            ["tensorslim", "quantize", str(fp), "-o", str(qp.with_suffix(".keep-float.onnx")), *args,
             "--exclude", exclude_regex(worst)]
        )  # fmt: skip
    for x in ranked[:top]:
        if x.weight:
            w = onnx.numpy_helper.to_array(inits[x.weight]).ravel()
            counts, edges = np.histogram(w, bins=40)
            rep.histograms[x.node] = {"counts": counts.astype(float).tolist(), "edges": edges.tolist()}
    return rep


def _nsr(signal: float, noise: float) -> float:
    return noise / signal if signal > 0 else 0.0


def _sqnr(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)
