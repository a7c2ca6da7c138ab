"""PyTorch in: export an ``nn.Module`` to ONNX with PyTorch's own exporter and check it against PyTorch.

::

    module (eval mode), example inputs
        -> torch.onnx.export(..., dynamo=False)        # the TorchScript exporter: no onnxscript needed
        -> ONNX Runtime vs PyTorch on the example inputs (max |diff| within tolerance, else InputError)
        -> ModelProto, or the written file

torch is imported inside :func:`from_torch` only, so ``import tensorslim`` never needs it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tensorslim.backends.onnx.io import load_model
from tensorslim.errors import InputError

__all__ = ["TORCH_MISSING", "from_torch", "import_torch"]

log = logging.getLogger(__name__)

TORCH_MISSING = "PyTorch is not installed: pip install 'tensorslim[torch]' (pinned to the CPU build)"
PARITY_KEY = "tensorslim.export_max_abs_diff"


def import_torch() -> Any:
    """Import torch, or raise :class:`InputError` saying how to install it."""
    try:
        import torch
    except ImportError as e:
        raise InputError(TORCH_MISSING) from e
    return torch


def _flatten(value: Any) -> list[Any]:
    """Tensors of a forward result in the order the exporter emits them (tuples, lists, dicts, ModelOutput)."""
    torch = import_torch()
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _flatten(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _flatten(v)]
    return []


def _default_names(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


def _set_modes(module: Any, modes: Mapping[Any, bool]) -> None:
    for sub, mode in modes.items():
        try:
            sub.train(mode)
        except NotImplementedError:  # torch.export graph modules have no train()
            return


def from_torch(
    module: Any,
    example_inputs: Any,
    *,
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    output: str | os.PathLike[str] | None = None,
    opset: int = 17,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    tolerance: float = 1e-4,
) -> Path | onnx.ModelProto:
    """Export a PyTorch module to ONNX and check that ONNX Runtime reproduces PyTorch's outputs.

    The module is put in eval mode for the export and the check (dropout off, batch-norm statistics frozen);
    every submodule's own training flag is restored afterwards. The export uses PyTorch's TorchScript-based
    exporter (``torch.onnx.export(..., dynamo=False)``), which needs nothing beyond torch itself.

    Args:
        module: a ``torch.nn.Module``, a loaded TorchScript module, or ``ExportedProgram.module()``.
        example_inputs: one tensor, a tuple/list of tensors (positional arguments), or a mapping of keyword
            arguments to tensors (its keys become the input names).
        dynamic_axes: dynamic dimensions per input/output name, as ``torch.onnx.export`` takes them, e.g.
            ``{"input": {0: "batch"}}``. Without it every dimension is fixed to the example's.
        output: where to write the ONNX model (atomically); ``None`` returns the ``ModelProto``.
        opset: ONNX opset version.
        input_names: names of the ONNX inputs [default: ``input`` or ``input_0``, ``input_1``...; the keys of a
            mapping].
        output_names: names of the ONNX outputs [default: ``output`` or ``output_0``...].
        tolerance: largest allowed ``max|onnx - torch|`` per output, relative to ``max(1, max|torch|)``.

    Returns:
        The path written when ``output`` is given, else the ONNX model. The measured maximum absolute
        difference is stored in the model's metadata under ``tensorslim.export_max_abs_diff``.

    Raises:
        InputError: torch is missing, the inputs are not tensors, the export fails, or ONNX Runtime's outputs
            differ from PyTorch's beyond ``tolerance``.
    """
    torch = import_torch()
    from tensorslim.backends.onnx.io import check_output_path, save_model

    if output is not None:
        check_output_path(output)
    kwargs: dict[str, Any] = {}
    if isinstance(example_inputs, Mapping):
        kwargs = dict(example_inputs)
        args: tuple[Any, ...] = ()
        tensors = list(kwargs.values())
        names = list(input_names or kwargs)
    else:
        args = tuple(example_inputs) if isinstance(example_inputs, list | tuple) else (example_inputs,)
        tensors = list(args)
        names = list(input_names or _default_names("input", len(args)))
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise InputError("example_inputs: give a tensor, a tuple of tensors or a dict of name -> tensor")
    if len(names) != len(tensors):
        raise InputError(f"input_names: {len(names)} name(s) for {len(tensors)} example input(s)")

    modes = {m: m.training for m in module.modules()} if hasattr(module, "modules") else {}
    try:
        _set_modes(module, dict.fromkeys(modes, False))
        try:
            with torch.no_grad():
                reference = [t.detach().cpu().numpy() for t in _flatten(module(*args, **kwargs))]
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise InputError(f"the module fails on the example inputs ({msg}); check their shapes and dtypes") from e
        if not reference:
            raise InputError("the module returned no tensor; from_torch needs tensor outputs")
        outs = list(output_names or _default_names("output", len(reference)))
        proto = _export(torch, module, args, kwargs, names, outs, dynamic_axes, opset)
        # The exporter puts back the mode it found, which can switch dropout on again in some versions.
        _set_modes(module, dict.fromkeys(modes, False))
    finally:
        _set_modes(module, modes)

    feeds = {n: t.detach().cpu().numpy() for n, t in zip(names, tensors, strict=True)}
    diff = _parity(proto, feeds, reference, tolerance)
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, PARITY_KEY: f"{diff:.3g}"})
    log.info("ONNX export matches PyTorch on the example inputs: max |diff| %.3g (tolerance %.3g)", diff, tolerance)
    if output is None:
        return proto
    return save_model(proto, output)


def _export(
    torch: Any,
    module: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    names: list[str],
    outs: list[str],
    dynamic_axes: Mapping[str, Any] | None,
    opset: int,
) -> onnx.ModelProto:
    """Run the TorchScript exporter into a temporary folder and load the result (external data included)."""
    import warnings

    with tempfile.TemporaryDirectory(prefix="tensorslim-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        # nn.MultiheadAttention / TransformerEncoderLayer take a fused "fast path" in eval mode that has no ONNX
        # export; the regular path computes the same thing
        mha = getattr(torch.backends, "mha", None)
        fastpath = mha.get_fastpath_enabled() if mha is not None else None
        try:
            if mha is not None:
                mha.set_fastpath_enabled(False)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    args,
                    str(path),
                    kwargs=kwargs or None,
                    input_names=names,
                    output_names=outs,
                    dynamic_axes={k: dict(v) if isinstance(v, Mapping) else list(v) for k, v in dynamic_axes.items()}
                    if dynamic_axes
                    else None,
                    opset_version=opset,
                    do_constant_folding=True,
                    training=torch.onnx.TrainingMode.PRESERVE,
                    dynamo=False,
                )
        except InputError:
            raise
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise InputError(f"torch.onnx.export failed: {msg}; check the example inputs and opset {opset}") from e
        finally:
            if mha is not None and fastpath is not None:
                mha.set_fastpath_enabled(fastpath)
        return load_model(path, check=False)


def _parity(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], reference: list[np.ndarray], tol: float) -> float:
    """Largest absolute difference between ONNX Runtime's and PyTorch's outputs; raises beyond ``tol``."""
    from tensorslim.runtime.ort import OrtRuntime

    runtime = OrtRuntime(proto)
    wanted = {spec.name for spec in runtime.inputs}
    outputs = runtime.run({k: v for k, v in feeds.items() if k in wanted})
    if len(outputs) != len(reference):
        log.warning("export parity: %d ONNX outputs vs %d torch outputs; comparing none", len(outputs), len(reference))
        return float("nan")
    worst = 0.0
    for i, (a, b) in enumerate(zip(outputs, reference, strict=True)):
        if a.shape != b.shape:
            raise InputError(f"the ONNX export's output {i} has shape {a.shape}, PyTorch's {b.shape}")
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
        if not diff <= tol * scale:
            raise InputError(
                f"the ONNX export does not match PyTorch: output {i} max |diff| {diff:.3g} > {tol * scale:.3g}; "
                "the module may use an op the exporter maps differently (report it) or be non-deterministic"
            )
        worst = max(worst, diff)
    return worst
