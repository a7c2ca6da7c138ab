"""Python API of pruning, clustering, packing and the combined pipeline (prune -> cluster -> quantize -> pack).

Typical use::

    import tensorslim as ts

    ts.prune("model.onnx", "pruned.onnx", config=ts.PruneConfig(sparsity=0.5), data="calib.npz")
    ts.prune_channels("model.onnx", "small.onnx", config=ts.ChannelPruneConfig(ratio=0.5), data="calib.npz")
    ts.cluster("model.onnx", "clustered.onnx", config=ts.ClusterConfig(clusters=16))
    ts.pack("clustered.onnx", "model.tslim")
    ts.unpack("model.tslim", "model.onnx")
    report = ts.compress("model.onnx", "model.tslim", sparsity=0.5, clusters=16, data="calib.npz")
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import onnx

from tensorslim.backends.onnx.io import check_output_path, load_model, model_size_bytes
from tensorslim.data import BatchAxes, Dataset
from tensorslim.data.load import DataLike
from tensorslim.errors import InputError
from tensorslim.pack import PackConfig, PackReport, pack_model, unpack_model
from tensorslim.passes.base import Pass, PassResult
from tensorslim.passes.channel_prune import ChannelPruneConfig, ChannelPrunePass
from tensorslim.passes.cluster import ClusterConfig, ClusterGranularity, ClusterPass
from tensorslim.passes.prune import PruneConfig, PruneMethod, PrunePass

__all__ = ["CompressReport", "StageReport", "cluster", "compress", "pack", "prune", "prune_channels", "unpack"]

ModelLike = str | os.PathLike[str] | onnx.ModelProto


def _model(model: ModelLike) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else load_model(model)


def _data(
    model: onnx.ModelProto, data: DataLike | None, max_samples: int | None, batch_axis: BatchAxes | None = None
) -> Dataset | None:
    """``data`` in any form :func:`tensorslim.data.load_data` takes, checked against ``model``."""
    if data is None:
        return None
    from tensorslim.api.core import load_calibration

    return load_calibration(data, model, max_samples=max_samples, batch_axis=batch_axis)


def _finish(
    result: PassResult[onnx.ModelProto], output: str | os.PathLike[str] | None, source: onnx.ModelProto
) -> PassResult[onnx.ModelProto]:
    """The API's one output check (it must load in ONNX Runtime before anything is written), then the write."""
    from tensorslim.api.verify import write_output

    write_output(result.model, output, source=source)
    return result


def _check_out(model: ModelLike, output: str | os.PathLike[str] | None) -> None:
    if output is not None:
        check_output_path(output, *([model] if isinstance(model, str | os.PathLike) else []))


C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)


class DataPassFunction(Protocol[C_contra]):
    """The signature :func:`prune`, :func:`prune_channels` and :func:`cluster` share."""

    __name__: str

    def __call__(
        self,
        model: ModelLike,
        output: str | os.PathLike[str] | None = None,
        *,
        config: C_contra | None = None,
        data: DataLike | None = None,
        max_samples: int | None = 256,
        batch_axis: BatchAxes | None = None,
    ) -> PassResult[onnx.ModelProto]: ...


def _data_pass(name: str, make: Callable[[C | None, Dataset | None], Pass], doc: str) -> DataPassFunction[C]:
    """The API function ``name``: check the output path, load the model and ``data`` (``max_samples`` of it at
    most), run the pass ``make(config, data)`` builds, verify and write the result."""

    def run(model: ModelLike, output: str | os.PathLike[str] | None = None, *, config: C | None = None,
            data: DataLike | None = None, max_samples: int | None = 256,
            batch_axis: BatchAxes | None = None) -> PassResult[onnx.ModelProto]:  # fmt: skip
        if _is_tflite(model):
            return _tflite_pass(name, model, output, config, data)
        _check_out(model, output)
        m = _model(model)
        result: PassResult[onnx.ModelProto] = make(config, _data(m, data, max_samples, batch_axis))(m)
        return _finish(result, output, m)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    return run


def _is_tflite(model: Any) -> bool:
    from tensorslim.backends.tflite.io import is_tflite

    return isinstance(model, str | os.PathLike) and is_tflite(model)


def _tflite_pass(
    name: str, model: str | os.PathLike[str], output: str | os.PathLike[str] | None, config: Any, data: Any
) -> PassResult[Any]:
    """:func:`prune` or :func:`cluster` of a ``.tflite`` file (:mod:`tensorslim.backends.tflite.sparsify`): the
    pass, then the output loaded in LiteRT before it is written."""
    from tensorslim.backends.tflite.io import load_model as load_tflite
    from tensorslim.backends.tflite.io import save_model as save_tflite
    from tensorslim.backends.tflite.io import serialize
    from tensorslim.backends.tflite.sparsify import TfliteClusterPass, TflitePrunePass
    from tensorslim.runtime.litert import make_interpreter

    if name == "prune_channels":
        raise InputError(f"{model}: channel pruning rewrites ONNX graphs only; for .tflite use prune (unstructured "
                         "or N:M)")  # fmt: skip
    if data is not None:
        raise InputError(f"{model}: data: activation-aware {name} collects activations through ONNX Runtime; drop "
                         "the data for .tflite models (magnitude pruning and k-means need none)")  # fmt: skip
    wanted = PruneConfig if name == "prune" else ClusterConfig
    if config is not None and not isinstance(config, wanted):
        raise InputError(f"{name}: config is a {type(config).__name__}, not a {wanted.__name__}")
    _check_out(model, output)
    src = load_tflite(model)
    if isinstance(config, ClusterConfig) or (config is None and name == "cluster"):
        result = TfliteClusterPass(config)(src)
    else:
        result = TflitePrunePass(config)(src)
    try:
        make_interpreter(serialize(result.model))
    except InputError as e:
        raise InputError(f"the {name}d model does not load in LiteRT: {e}; please report this") from e
    if output is not None:
        save_tflite(result.model, output)
    return result


prune: DataPassFunction[PruneConfig] = _data_pass(
    "prune", PrunePass, "Unstructured or N:M weight pruning (:class:`PrunePass`); the graph keeps its shape."
)
prune_channels: DataPassFunction[ChannelPruneConfig] = _data_pass(
    "prune_channels", ChannelPrunePass,
    "Channel pruning that shrinks the graph (:class:`ChannelPrunePass`), refitted with ``data``.",
)  # fmt: skip
cluster: DataPassFunction[ClusterConfig] = _data_pass(
    "cluster", ClusterPass,
    "Weight clustering (:class:`ClusterPass`); activation-aware for MatMul/Gemm when ``data`` is given.",
)  # fmt: skip


def pack(model: ModelLike, output: str | os.PathLike[str], *, config: PackConfig | None = None) -> PackReport:
    """Pack an ONNX or ``.tflite`` model into a ``.tslim`` file (see :func:`tensorslim.pack.pack_model` and
    :func:`tensorslim.pack.tflite.pack_tflite`)."""
    if _is_tflite(model):
        from tensorslim.pack.tflite import pack_tflite

        return pack_tflite(model, output, config=config)
    return pack_model(model, output, config=config)


def unpack(path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Any:
    """Unpack a ``.tslim`` file: the ONNX model (weights bit-exact), or for a packed ``.tflite`` the flatbuffer
    object of the exact bytes that were packed (written byte for byte to ``output``)."""
    from tensorslim.pack.tflite import is_tflite_pack, unpack_tflite

    if is_tflite_pack(path):
        from tensorslim.backends.tflite.io import model_from_bytes

        return model_from_bytes(unpack_tflite(path, output), label=str(path))
    return unpack_model(path, output)


@dataclass
class StageReport:
    """One stage of :func:`compress`: its size and its fidelity against the input model."""

    stage: str
    bytes: int
    ratio: float
    cosine_mean: float | None = None
    sqnr_db: float | None = None
    accuracy: float | None = None
    seconds: float = 0.0
    detail: str = ""


@dataclass
class CompressReport:
    """What :func:`compress` did, stage by stage."""

    output_path: Path
    stages: list[StageReport] = field(default_factory=list)
    pack: PackReport | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        from dataclasses import asdict

        return {
            "output_path": str(self.output_path),
            "stages": [asdict(s) for s in self.stages],
            "pack": self.pack.to_dict() if self.pack else None,
        }


def compress(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    sparsity: float = 0.0,
    pattern: str = "unstructured",
    clusters: int | None = 16,
    per_channel: bool = True,
    quantize: bool = True,
    data: DataLike | None = None,
    eval_data: DataLike | None = None,
    max_samples: int | None = 256,
    target_runtime: str | None = None,
    batch_axis: BatchAxes | None = None,
) -> CompressReport:
    """Prune -> cluster -> quantize -> pack, measuring each stage's size and fidelity against the input.

    Args:
        model: the float ONNX model (never modified).
        output: the ``.tslim`` file to write.
        sparsity: unstructured sparsity (0 skips pruning); ``pattern`` may be ``N:M`` instead.
        pattern: ``unstructured`` or ``N:M``.
        clusters: centroids per codebook (``None`` skips clustering).
        per_channel: one codebook per output channel.
        quantize: int8 dynamic quantization of the weights that remain float.
        data: calibration data in any form :func:`tensorslim.data.load_data` takes (activation-aware pruning
            and clustering).
        eval_data: data for the fidelity of each stage (``data`` when not given, else generated inputs).
        max_samples: calibration samples used at most.
        target_runtime: the oldest ONNX Runtime the unpacked model must load in (``onnxruntime>=1.17``); an
            error names what it lacks.
        batch_axis: ``{input_name: axis}`` where the input shapes do not tell the batch axis.
    """
    from tensorslim.evaluate import evaluate
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig, DynamicQuantPass
    from tensorslim.runtime.ort import OrtRuntime
    from tensorslim.runtime.targets import check_target, target_for

    if Path(output).suffix.lower() != ".tslim":
        raise InputError(f"{output}: the pipeline writes a packed .tslim file; name the output *.tslim")
    if _is_tflite(model):
        raise InputError(
            f"{model}: compress runs the ONNX pipeline; for .tflite run prune and/or cluster, then pack "
            "(tensorslim cluster m.tflite -o c.tflite && tensorslim pack c.tflite -o m.tslim)"
        )
    target = target_for(target_runtime, model_kind="onnx")
    check_output_path(output, model)
    src = load_model(model)
    base_bytes = model_size_bytes(src)
    calib = _data(src, data, max_samples, batch_axis)
    ref = OrtRuntime(src)
    ev = _data(src, eval_data, None, batch_axis) if eval_data is not None else calib
    report = CompressReport(Path(output))

    def measure(name: str, m: onnx.ModelProto, seconds: float, detail: str, size: int | None = None) -> None:
        o = evaluate(ref, OrtRuntime(m), ev, batch_size=32).outputs[0]
        n = size if size is not None else model_size_bytes(m)
        report.stages.append(StageReport(name, n, n / base_bytes, o.cosine_mean, o.sqnr_db,
                                         o.candidate_accuracy, seconds, detail))  # fmt: skip

    measure("float", src, 0.0, "input model")
    cur = src
    if sparsity > 0 or pattern != "unstructured":
        t = time.perf_counter()
        cfg = PruneConfig(sparsity=sparsity if pattern == "unstructured" else None, pattern=pattern,
                          method="sparsegpt" if calib is not None else "magnitude")  # fmt: skip
        cur = PrunePass(cfg, calib)(cur).model
        measure("prune", cur, time.perf_counter() - t, f"{pattern} {sparsity:g} ({PruneMethod(cfg.method).value})")
    if clusters is not None:
        t = time.perf_counter()
        ccfg = ClusterConfig(clusters=clusters, granularity="per_channel" if per_channel else "per_tensor",
                             codebook_dtype="float16" if per_channel else "float32")  # fmt: skip
        cur = ClusterPass(ccfg, calib)(cur).model
        measure("cluster", cur, time.perf_counter() - t, f"k={clusters} {ClusterGranularity(ccfg.granularity).value}")
    if quantize:
        t = time.perf_counter()
        q = DynamicQuantPass(DynamicQuantConfig(form="weight_only"))(cur)
        if q.modified:
            cur = q.model
            n = sum(1 for r in q.records if not r.skipped)
            measure("quantize", cur, time.perf_counter() - t, f"int8 weight-only on {n} remaining float weight(s)")
    with tempfile.TemporaryDirectory(prefix="tslim-") as tmp:
        t = time.perf_counter()
        check_target(cur, target)
        rep = pack_model(cur, output)
        unpacked = unpack_model(output, Path(tmp) / "unpacked.onnx")
        measure("pack", unpacked, time.perf_counter() - t, f"{rep.bits_per_weight:.2f} bits/weight", rep.file_bytes)
    report.pack = rep
    return report
