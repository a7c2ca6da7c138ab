"""Loading and saving ONNX models with clear errors and atomic writes.

* ``load_model`` reads a model and its external data, and turns every way a file can be wrong (missing,
  not ONNX, truncated, failing the checker) into an :class:`~tensorslim.errors.InputError` that names the
  file and the fix.
* ``save_model`` writes through a temporary file in the destination folder and renames it into place, so
  a crash never leaves a half-written model. Models whose serialized size would pass protobuf's 2 GB
  limit are written with their tensors in one external data file next to the model.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from tensorslim._files import check_output_path, publish, register_temp, release_temp, write_bytes_atomic
from tensorslim.errors import InputError

__all__ = ["check_output_path", "load_model", "model_size_bytes", "save_model"]

_TWO_GB = 2**31
# tensors at least this large go to the external data file when a model is saved externally
_EXTERNAL_THRESHOLD = 1024


def _external_locations(model: onnx.ModelProto) -> set[str]:
    locations: set[str] = set()
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return locations


def _all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor the model stores: initializers and tensor attributes (``Constant`` values and the like),
    in the main graph and in every subgraph."""
    tensors: list[onnx.TensorProto] = []
    stack = [model.graph]
    while stack:
        g = stack.pop()
        tensors.extend(g.initializer)
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    tensors.append(a.t)
                tensors.extend(a.tensors)
                if a.HasField("g"):
                    stack.append(a.g)
                stack.extend(a.graphs)
    return tensors


def load_model(
    path: str | os.PathLike[str], *, check: bool = True, external_data: bool = True
) -> onnx.ModelProto:
    """Load an ONNX model with its external data: the one way tensorslim reads an ``.onnx`` file.

    Args:
        path: the ``.onnx`` file.
        check: run the ONNX checker (on the file, so models over 2 GB are checked too).
        external_data: read the external data files; ``False`` reads the graph only (external tensors stay
            references, their files are neither checked nor opened), for callers that need the structure.

    Raises:
        InputError: the file is missing, is not an ONNX model, is truncated or corrupt, references
            missing external data, or fails the ONNX checker.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not an ONNX file; pass the path of the .onnx file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: the file is empty; re-export or re-download the model")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as e:
        from tensorslim.backends.tflite.io import is_tflite

        if is_tflite(p):  # a valid model of the other format: say so, not "corrupt"
            raise InputError(
                f"{p}: a .tflite model; this command works on ONNX models (for .tflite: quantize, inspect, bench)"
            ) from e
        raise InputError(
            f"{p}: not a readable ONNX model (the file is corrupt, truncated, or another format); "
            "re-export the model or check that the download completed"
        ) from e
    _check_text(p, model)
    if not model.graph.node:
        raise InputError(
            f"{p}: the file parsed but holds no graph nodes (it is not an ONNX model, or it is truncated); "
            "re-export the model"
        )
    if external_data:
        _read_external(p, model)
    for tensor in _all_tensors(model):
        _check_raw_size(p, tensor)
    if check:
        try:
            onnx.checker.check_model(str(p))
        except onnx.checker.ValidationError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(
                f"{p}: the ONNX checker rejects the model ({first}); the file is corrupt or was written by "
                "a broken exporter"
            ) from e
    return model


def _read_external(p: Path, model: onnx.ModelProto) -> None:
    """Read the external data of ``model`` (loaded from ``p``) into it; only files beside the model are read."""
    _check_locations(p, _external_locations(model))
    missing = [loc for loc in _external_locations(model) if not (p.parent / loc).is_file()]
    if missing:
        raise InputError(
            f"{p}: external data file(s) {', '.join(sorted(missing))} not found next to the model; "
            "keep the data files in the same folder as the .onnx file"
        )
    try:
        onnx.load_external_data_for_model(model, str(p.parent))
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: external data could not be read ({e}); the data file may be truncated") from e
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:  # pragma: no cover - load_external_data resets it
            raise InputError(f"{p}: tensor {tensor.name!r} kept its external data; this is a bug")


#: Sub-byte types: values packed per byte (6-bit types are not checked).
_PER_BYTE = {getattr(onnx.TensorProto, n): k for n, k in (("INT4", 2), ("UINT4", 2), ("FLOAT4E2M1", 2), ("INT2", 4),
                                                          ("UINT2", 4)) if hasattr(onnx.TensorProto, n)}  # fmt: skip
_UNCHECKED = {getattr(onnx.TensorProto, n, -1) for n in ("STRING", "UNDEFINED", "FLOAT6E2M3", "FLOAT6E3M2")}


def _check_raw_size(p: Path, tensor: onnx.TensorProto) -> None:
    """A tensor's raw bytes must hold exactly its shape's values: a corrupt file (a mutated type or shape) is the
    user's input error, not a NumPy reshape error deep inside a pass."""
    if not tensor.raw_data or tensor.data_type in _UNCHECKED:
        return
    count = 1
    for d in tensor.dims:
        count *= d
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        raise InputError(
            f"{p}: tensor {tensor.name!r} has the unknown element type {tensor.data_type}; the file is corrupt or "
            "was written by a broken exporter, re-export the model"
        ) from None
    per_byte = _PER_BYTE.get(tensor.data_type)
    want = -(-count // per_byte) if per_byte else count * itemsize
    if len(tensor.raw_data) != want:
        raise InputError(
            f"{p}: tensor {tensor.name!r} holds {len(tensor.raw_data):,} bytes, but its shape {list(tensor.dims)} "
            f"and type need {want:,}; the file is corrupt or was written by a broken exporter, re-export the model"
        )


def _check_text(p: Path, model: onnx.ModelProto) -> None:
    """Every string field (names, op types, domains, metadata) must be valid UTF-8.

    protobuf hands back ``bytes`` for a string field that is not valid UTF-8, which every later step expects
    to be ``str``.
    """
    from google.protobuf.descriptor import FieldDescriptor

    stack: list[object] = [model]
    while stack:
        msg = stack.pop()
        if isinstance(msg, onnx.TensorProto):  # its data fields are bytes: read only the text ones (no copies)
            fields = [(msg.DESCRIPTOR.fields_by_name[f], getattr(msg, f)) for f in ("name", "doc_string")]
            fields.append((msg.DESCRIPTOR.fields_by_name["external_data"], msg.external_data))
        else:
            fields = msg.ListFields()  # type: ignore[attr-defined]
        for fd, value in fields:
            repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == FieldDescriptor.LABEL_REPEATED
            values = value if repeated else [value]
            if fd.type == FieldDescriptor.TYPE_STRING:
                for v in values:
                    if not isinstance(v, str):
                        shown = bytes(v)[:60].decode("utf-8", "backslashreplace")
                        raise InputError(
                            f"{p}: a {type(msg).__name__}.{fd.name} is not valid UTF-8 ({shown!r}); the file is "
                            "corrupt or was written by a broken exporter, re-export the model"
                        )
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                stack.extend(values)


def _check_locations(p: Path, locations: set[str]) -> None:
    """External data must lie in the model's folder or below: an absolute or escaping path is refused."""
    base = p.parent.resolve()
    for loc in sorted(locations):
        bad = os.path.isabs(loc) or "\x00" in loc
        if not bad:
            target = (p.parent / loc).resolve()
            bad = base != target and base not in target.parents
        if bad:
            raise InputError(
                f"{p}: external data location {loc!r} points outside the model's folder; tensorslim only reads "
                "data files next to the model (re-save the model with a relative location such as model.onnx.data)"
            )


def model_size_bytes(model: onnx.ModelProto) -> int:
    """Serialized size of the model, without building the serialization.

    Past protobuf's 2 GB limit ``ByteSize`` refuses; the size is then summed part by part.
    """
    try:
        return int(model.ByteSize())
    except Exception:  # protobuf raises EncodeError/ValueError past 2 GB
        g = model.graph
        parts = [*g.initializer, *g.sparse_initializer, *g.node, *g.input, *g.output, *g.value_info]
        return sum(int(p.ByteSize()) for p in parts)


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    external_data: bool | None = None,
    verify: Callable[[Path], None] | None = None,
    stamp_lowest: bool = True,
) -> Path:
    """Write ``model`` to ``path`` atomically.

    Args:
        model: the model; it is not modified (a copy is made when tensors move to external data).
        path: destination file.
        external_data: force (``True``) or forbid (``False``) external data; by default it is used only
            when the model would pass protobuf's 2 GB limit. The data file is ``<name>.data``.
        verify: called with the written temporary file before it replaces anything (raise to refuse it).
        stamp_lowest: stamp the lowest opset and IR version (below); off to write the model exactly as it is.

    The file is stamped with the lowest ai.onnx opset and IR version that express the model
    (:func:`tensorslim.runtime.targets.lowest_versions`), so it loads in the oldest runtimes that can run it.

    Returns:
        The destination path.
    """
    if not stamp_lowest:
        return _save(model, path, external_data, verify)
    with _lowest_stamps(model):
        return _save(model, path, external_data, verify)


@contextlib.contextmanager
def _lowest_stamps(model: onnx.ModelProto) -> Iterator[None]:
    """Stamp ``model`` with its lowest opset and IR version for the duration of the block, then restore."""
    from tensorslim.runtime.targets import lowest_versions

    opset, ir = lowest_versions(model)
    default = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    saved = (None if default is None else default.version, model.ir_version)
    if default is not None:
        default.version = opset
    model.ir_version = ir
    try:
        yield
    finally:
        if default is not None and saved[0] is not None:
            default.version = saved[0]
        model.ir_version = saved[1]


def _save(
    model: onnx.ModelProto, path: str | os.PathLike[str], external_data: bool | None,
    verify: Callable[[Path], None] | None,
) -> Path:  # fmt: skip
    out = check_output_path(path)
    parent = out.parent if str(out.parent) else Path(".")
    use_external = model_size_bytes(model) >= _TWO_GB - 2**24 if external_data is None else external_data
    if not use_external:
        return write_bytes_atomic(out, model.SerializeToString(), verify=verify)
    data_name = out.name + ".data"
    check_output_path(parent / data_name)
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as e:
        raise InputError(f"{out}: cannot write to the folder {parent} ({e.strerror}); choose another output") from e
    register_temp(tmpdir)
    try:
        to_save = onnx.ModelProto()
        to_save.CopyFrom(model)
        onnx.save_model(
            to_save,
            str(tmpdir / out.name),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=_EXTERNAL_THRESHOLD,
        )
        if verify is not None:
            verify(tmpdir / out.name)
        if (tmpdir / data_name).exists():
            publish(tmpdir / data_name, parent / data_name)
        publish(tmpdir / out.name, out)
    except OSError as e:
        raise InputError(f"{out}: writing failed ({e.strerror or e}); check free space and permissions") from e
    finally:
        release_temp(tmpdir)
    return out
