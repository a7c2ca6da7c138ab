"""Synthetic benchmark inputs from a model's input signature, and checks that one input dict fits a model.

Rules for generated inputs:

* dimensions: ``shapes[input]`` when given (the whole shape: ``--shape x=1x3x224x224``); else a fixed size is
  kept, a symbolic or unknown dimension takes ``dim_overrides[name]`` when its name is there, else
  ``batch_size`` when it is the first dimension, else 1: such a size-1 dimension says little about real inputs
  (a 1x1 image, a one-token sequence), so :func:`unsized_dims` lists them and the timing commands say so;
* ``float``/``float16``/``double`` -> standard normal values from ``numpy.random.default_rng(seed)``;
* integer types -> values in 0..99, or all ones when the input name contains ``"mask"``; an integer input that
  indexes a constant table through ``Gather`` (token ids, token type ids, positions: see :func:`index_bounds`)
  stays below the table's size;
* ``bool`` -> ``True``;
* an integer input of a statically quantized model (``tensorslim quantize --mode static --io uint8``: its scale
  and zero point in the model's ``tensorslim.io_quantization`` metadata) stands for float data: it is
  generated like a float input, and :func:`feeds_for` quantizes float arrays for it with the model's own
  parameters (as :class:`~tensorslim.runtime.ort.OrtRuntime` does), so a float model and its integer-I/O
  quantized version see the same data.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tensorslim.algorithms.quantize import quantize, tensor_params
from tensorslim.backends.onnx.metadata import IO_METADATA_KEY
from tensorslim.data import random_input
from tensorslim.errors import InputError

__all__ = [
    "InputSpec", "feeds_for", "make_inputs", "parse_shape", "quantize_feed", "real_inputs", "runnable_inputs",
    "specs_from_session",
    "unsized_dims", "unsized_in_model", "unsized_note", "unsized_said",
]  # fmt: skip

#: How a command's error tells the user to give real inputs instead of made-up ones.
PASS_REAL_INPUTS = "pass real inputs: --data DATA.npz (doctor, profile, eval, diagnose) or inputs= in the Python API"

_ORT_TO_NUMPY: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class InputSpec:
    """One graph input as onnxruntime reports it.

    Attributes:
        name: Input name.
        shape: Dimensions: an int for a fixed size, a str for a symbolic one, ``None`` for unknown.
        ort_type: onnxruntime type string, e.g. ``"tensor(float)"``.
        quantization: ``(scale, zero_point)`` when the input is the quantized form of float data (integer
            model inputs of static quantization), else ``None``.
    """

    name: str
    shape: tuple[int | str | None, ...]
    ort_type: str
    quantization: tuple[float, int] | None = None

    @property
    def dtype(self) -> np.dtype[Any] | None:
        """The numpy dtype, or ``None`` for types numpy cannot hold (bfloat16, strings, sequences...)."""
        np_type = _ORT_TO_NUMPY.get(self.ort_type)
        return None if np_type is None else np.dtype(np_type)


def specs_from_session(session: Any) -> list[InputSpec]:
    """Read the input signature of an ``onnxruntime.InferenceSession`` (with its integer inputs' quantization).

    Raises:
        InputError: the model's ``tensorslim.io_quantization`` metadata is not readable.
    """
    qin = _io_quantization(session)
    out = []
    for arg in session.get_inputs():
        shape = tuple(d if isinstance(d, int | str) or d is None else None for d in (arg.shape or ()))
        spec = InputSpec(name=arg.name, shape=shape, ort_type=arg.type)
        p = qin.get(arg.name)
        if p is not None and spec.dtype is not None and spec.dtype.kind in "iu":
            spec = dataclasses.replace(spec, quantization=(float(p["scale"]), int(p["zero_point"])))
        out.append(spec)
    return out


def _io_quantization(session: Any) -> dict[str, dict[str, Any]]:
    """``{input name: {scale, zero_point, dtype}}`` from the model metadata static quantization writes."""
    try:
        meta = session.get_modelmeta().custom_metadata_map.get(IO_METADATA_KEY)
    except AttributeError:  # not an onnxruntime session
        return {}
    if not meta:
        return {}
    try:
        inputs = json.loads(meta).get("inputs", {})
        return {str(k): {"scale": float(v["scale"]), "zero_point": int(v["zero_point"])} for k, v in inputs.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise InputError(f"unreadable {IO_METADATA_KEY} model metadata ({e}); re-run tensorslim quantize") from None


def quantize_feed(arr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Float data quantized for an integer input with its ``(scale, zero_point)`` (round half to even, clip)."""
    if spec.quantization is None or spec.dtype is None:
        raise InputError(f"input {spec.name!r} carries no quantization parameters")
    scale, zero_point = spec.quantization
    return quantize(arr, tensor_params(scale, zero_point, spec.dtype), narrow=False)


def _resolve_shape(
    spec: InputSpec, batch_size: int, dim_overrides: Mapping[str, int], shape: Sequence[int] | None = None,
    default_dim: int = 1,
) -> tuple[tuple[int, ...], bool]:
    if shape is not None:
        return _checked_shape(spec, shape), False  # its first size is the samples per run
    dims: list[int] = []
    dynamic_batch = False
    for i, d in enumerate(spec.shape):
        if isinstance(d, int) and d >= 0:
            dims.append(d)
        elif isinstance(d, str) and d in dim_overrides:
            dims.append(int(dim_overrides[d]))
        elif i == 0:
            dims.append(batch_size)
            dynamic_batch = True
        else:
            dims.append(default_dim)
    return tuple(dims), dynamic_batch


def _checked_shape(spec: InputSpec, shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` for ``spec`` (``--shape``), checked against its rank and fixed sizes."""
    given = tuple(int(d) for d in shape)
    want = "x".join("?" if not isinstance(d, int) or d < 0 else str(d) for d in spec.shape) or "a scalar"
    if len(given) != len(spec.shape):
        raise InputError(f"--shape {spec.name}: {len(given)} dims given, the input has {len(spec.shape)} ({want}); "
                         f"give one size per dim")  # fmt: skip
    for axis, (g, d) in enumerate(zip(given, spec.shape, strict=True)):
        if g < 1:
            raise InputError(f"--shape {spec.name}: size {g} on axis {axis}; sizes are at least 1")
        if isinstance(d, int) and d >= 0 and g != d:
            raise InputError(f"--shape {spec.name}: axis {axis} is fixed at {d} in the model ({want}), {g} given")
    return given


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``"x=1x3x224x224"`` (``--shape``) as ``("x", (1, 3, 224, 224))``.

    Raises:
        InputError: not ``NAME=DIMxDIM...`` with positive integer sizes.
    """
    name, sep, dims = text.rpartition("=")
    parts = dims.lower().replace(",", "x").split("x")
    if not sep or not name.strip() or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise InputError(f"--shape: {text!r} is not INPUT=SIZExSIZE... (e.g. --shape x=1x3x224x224)")
    return name.strip(), tuple(int(p) for p in parts)


def unsized_dims(
    specs: Sequence[InputSpec],
    dim_overrides: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, list[int]]:
    """``{input: [axis, ...]}``: the dims other than the first that the model leaves unsized and no override
    sizes, so generated inputs make them 1."""
    out: dict[str, list[int]] = {}
    for spec in specs:
        if spec.name in (shapes or {}):
            continue
        axes = [i for i, d in enumerate(spec.shape) if i > 0 and not (isinstance(d, int) and d >= 0)
                and not (isinstance(d, str) and d in (dim_overrides or {}))]  # fmt: skip
        if axes:
            out[spec.name] = axes
    return out


def unsized_said(unsized: Mapping[str, Sequence[int]], input_shapes: Mapping[str, Sequence[int]]) -> str:
    """``"'x' axes 2, 3 (timed as 1x3x1x1)"`` for the inputs of ``unsized`` (see :func:`unsized_dims`), else ``""``."""
    return "; ".join(f"{name!r} axes {', '.join(map(str, axes))} (timed as {'x'.join(map(str, input_shapes[name]))})"
                     for name, axes in unsized.items() if name in input_shapes)  # fmt: skip


def unsized_in_model(path: str | Path, batch_size: int = 1) -> tuple[dict[str, list[int]], dict[str, tuple[int, ...]]]:
    """The open sizes of the ONNX model at ``path`` that generated inputs make up (:func:`unsized_dims`; the size
    :func:`runnable_inputs` picks), and the shapes they get; ``({}, {})`` when there are none or its inputs cannot be
    generated (the timing says so)."""
    from .latency import create_session

    try:
        session = create_session(str(path), 1)[0]
    except Exception:  # not loadable: the command's own loading says why
        return {}, {}
    unsized = unsized_dims(specs_from_session(session))
    if not unsized:
        return {}, {}
    try:
        made = runnable_inputs([session], batch_size=batch_size)[0]
    except InputError:
        return {}, {}
    return unsized, {k: v.shape for k, v in made.items()}


def unsized_note(
    unsized: Mapping[str, Sequence[int]], input_shapes: Mapping[str, Sequence[int]], *, command: str = ""
) -> str:
    """A one-line warning for generated inputs with unsized dims timed at made-up sizes, else ``""``; the fix names
    ``command`` (e.g. ``tensorslim bench a.onnx b.onnx``) when the warning comes from a command without the
    options."""
    said = unsized_said(unsized, input_shapes)
    if not said:
        return ""
    first = next(n for n in unsized if n in input_shapes)
    example = "x".join(str(d) if i not in unsized[first] else "N" for i, d in enumerate(input_shapes[first]))
    fix = f"--data DATA.npz, or --shape {first}={example} with real sizes"
    return (f"the model leaves some input sizes open and the generated inputs made them up: {said}; a made-up image or "
            f"sequence size says little about real inputs: " + (f"time it with {command} {fix}" if command else
            f"pass {fix}"))  # fmt: skip


def make_inputs(
    specs: Sequence[InputSpec],
    *,
    batch_size: int = 1,
    dim_overrides: Mapping[str, int] | None = None,
    seed: int = 0,
    model_name: str = "model",
    bounds: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    default_dim: int = 1,
) -> tuple[dict[str, np.ndarray], int]:
    """Generate one array per input spec.

    Args:
        specs: The input signature (see :func:`specs_from_session`).
        batch_size: Size of a symbolic/unknown first dimension.
        dim_overrides: Sizes of symbolic dimensions by name, e.g. ``{"sequence": 128}``.
        seed: Seed of the random generator.
        model_name: Used in error messages.
        bounds: Exclusive upper bounds of generated integers by input name (see :func:`index_bounds`).
        shapes: Whole shapes by input name (``--shape``), checked against the signature.
        default_dim: Size of the other dims the model leaves open (see :func:`runnable_inputs`).

    Returns:
        The input dict and the number of samples per run: ``batch_size`` when some input has a dynamic
        first dimension, else the first dimension of the first input (1 for scalars).

    Raises:
        InputError: An input has a type that cannot be generated (strings, bfloat16, sequences, maps), or a
            ``shapes`` entry names no input or does not fit one.
    """
    overrides = dict(dim_overrides or {})
    stray = sorted(set(shapes or {}) - {s.name for s in specs})
    if stray:
        raise InputError(f"--shape: {', '.join(map(repr, stray))} is no input of {model_name} (its inputs: "
                         f"{', '.join(s.name for s in specs)})")  # fmt: skip
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    any_dynamic = False
    samples: int | None = None
    for spec in specs:
        dtype = spec.dtype
        if dtype is None:
            raise InputError(
                f"{model_name}: cannot generate input {spec.name!r} of type {spec.ort_type}; {PASS_REAL_INPUTS}"
            )
        shape, dynamic = _resolve_shape(spec, batch_size, overrides, (shapes or {}).get(spec.name), default_dim)
        any_dynamic = any_dynamic or dynamic
        if samples is None:
            samples = shape[0] if shape else 1
        # quantized inputs get the float data they stand for
        kind = np.float32 if spec.quantization is not None and dtype.kind != "f" else dtype
        arr = random_input(rng, spec.name, kind, shape, (bounds or {}).get(spec.name))
        inputs[spec.name] = np.ascontiguousarray(arr)
    return inputs, (batch_size if any_dynamic else (samples or 1))


def runnable_inputs(
    sessions: Sequence[Any],
    *,
    batch_size: int = 1,
    dim_overrides: Mapping[str, int] | None = None,
    seed: int = 0,
    model_name: str = "model",
    bounds: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[dict[str, np.ndarray], int, str]:
    """:func:`make_inputs` for the first of ``sessions`` (ONNX Runtime sessions fed alike), with the dims the
    model leaves open made the first of :data:`~tensorslim.data.generate.OPEN_SIZES` at which every session runs
    (1 unless that fails: a detector whose upsampled features meet earlier ones needs a multiple of its stride).

    Returns:
        The inputs, the samples per run, and the size-1 failure in one line when a larger size was needed.
    """
    from tensorslim.data.generate import first_size_that_runs

    specs = specs_from_session(sessions[0])
    overrides = dict(dim_overrides or {})

    def build(n: int) -> tuple[dict[str, np.ndarray], int]:
        return make_inputs(specs, batch_size=batch_size, dim_overrides=overrides, seed=seed, model_name=model_name,
                           bounds=bounds, shapes=shapes, default_dim=n)  # fmt: skip

    if not unsized_dims(specs, overrides, shapes):
        return (*build(1), "")
    quiet = _quiet_run_options()
    each = [(sess, specs_from_session(sess)) for sess in sessions]

    def run(made: tuple[dict[str, np.ndarray], int]) -> None:
        for sess, sess_specs in each:
            sess.run(None, feeds_for(model_name, sess_specs, made[0]), quiet)

    def values(n: int) -> int:
        return sum(int(np.prod(_resolve_shape(s, batch_size, overrides, (shapes or {}).get(s.name), n)[0]))
                   for s in specs)  # fmt: skip

    (inputs, samples), _, error = first_size_that_runs(build, run, values)
    return inputs, samples, error


def _quiet_run_options() -> Any:
    """Run options whose failures ONNX Runtime raises without also logging them (the caller reports them)."""
    import onnxruntime as ort

    ro = ort.RunOptions()
    ro.log_severity_level = 4
    return ro


def feeds_for(model_name: str, specs: Sequence[InputSpec], inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Select and check the arrays of ``inputs`` that feed one model.

    Args:
        model_name: Used in error messages.
        specs: The model's input signature.
        inputs: The shared input dict (it may hold inputs of other models too).

    Returns:
        The feed dict for ``session.run`` (only the model's own inputs); float arrays for an integer input
        with quantization parameters (see :class:`InputSpec`) are quantized with them.

    Raises:
        InputError: An input is missing, or its dtype, rank or a fixed dimension does not match.
    """
    feeds: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in inputs:
            raise InputError(
                f"{model_name}: input {spec.name!r} ({spec.ort_type}, shape {list(spec.shape)}) is not in "
                f"the input dict (which has {sorted(inputs)}); the models do not take compatible inputs"
            )
        arr = np.asarray(inputs[spec.name])
        want = spec.dtype
        if spec.quantization is not None and arr.dtype.kind == "f":
            arr = quantize_feed(arr, spec)
        if want is not None and arr.dtype != want:
            raise InputError(
                f"{model_name}: input {spec.name!r} expects {spec.ort_type} but got an array of {arr.dtype}"
            )
        if spec.shape and len(spec.shape) != arr.ndim:
            raise InputError(
                f"{model_name}: input {spec.name!r} expects rank {len(spec.shape)} "
                f"(shape {list(spec.shape)}) but got shape {list(arr.shape)}"
            )
        for axis, (d, got) in enumerate(zip(spec.shape, arr.shape, strict=False)):
            if isinstance(d, int) and d >= 0 and d != got:
                raise InputError(
                    f"{model_name}: input {spec.name!r} expects size {d} on axis {axis} "
                    f"(shape {list(spec.shape)}) but got shape {list(arr.shape)}"
                )
        feeds[spec.name] = np.ascontiguousarray(arr)
    return feeds


def real_inputs(model: str | Path, data: Any, *, batch_size: int = 1) -> dict[str, np.ndarray]:
    """The first batch of ``data`` for the ONNX model at ``model``: ``--data`` of ``bench``, ``doctor`` and
    ``profile``, and the sample ``quantize``'s speed check times.

    ``data`` takes the forms of ``quantize --data`` (an ``.npz``, a folder of ``.npz`` files, or a loaded
    :class:`~tensorslim.data.Dataset` such as an image folder's), loaded and checked by
    :func:`tensorslim.api.load_calibration`; samples go along the first axis.

    Raises:
        InputError: the data cannot be read or does not fit the model.
    """
    from tensorslim.api import load_calibration
    from tensorslim.backends.onnx.io import load_model

    ds = load_calibration(data, load_model(Path(model)), max_samples=batch_size)
    batch, _ = next(iter(ds.batches(batch_size)))
    return {k: np.ascontiguousarray(v) for k, v in batch.items()}
