"""What the command line needs to take PyTorch and Hugging Face models and text data.

::

    model.pt (TorchScript)  + --input-shape x=1x3x32x32     -> torch.jit.load    -> from_torch -> out.float.onnx
    model.pt2 (torch.export) [+ --input-shape]              -> torch.export.load -> from_torch -> out.float.onnx
    hf_dir/ (config.json)   [+ --data s.txt --tokenizer T]  -> AutoModel         -> from_torch -> out.float.onnx
    model.onnx + --data sentences.txt --tokenizer PATH      -> tokenized feeds (padded to a fixed length)

The exported float model is written next to the output as ``<output stem>.float.onnx``: it is the reference
for ``tensorslim eval`` and for the speed check.
"""

from __future__ import annotations

import re
import struct
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tensorslim.data import Dataset
from tensorslim.errors import InputError
from tensorslim.frontends.torch import from_torch, import_torch

__all__ = [
    "PreparedInput",
    "is_torch_file",
    "needs_frontend",
    "parse_input_shapes",
    "prepare_input",
    "read_sentences",
    "resolve_cli_input",
    "tokenized_feeds",
]

TORCH_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".jit", ".torchscript")
MAX_SEQ_LEN = 128
_DTYPES = ("float32", "float16", "int64", "int32", "bool")
_SPEC = re.compile(r"^(?P<name>[^=]+)=(?P<dims>\d+(?:x\d+)*)(?::(?P<dtype>\w+))?$")
_FALLBACK_TEXT = "The quick brown fox jumps over the lazy dog."


@dataclass
class PreparedInput:
    """An ONNX model ready for the pipeline, and the data that came with it.

    Attributes:
        model: the ONNX file to quantize (the exported one, or the user's own).
        dataset: calibration/evaluation feeds built from ``--data`` text, when any.
        exported: whether ``model`` was exported here from PyTorch.
        notes: remarks for the user.
    """

    model: Path
    dataset: Dataset | None = None
    exported: bool = False
    notes: list[str] = field(default_factory=list)


def is_torch_file(path: Path) -> bool:
    """Whether ``path`` looks like a PyTorch archive (by extension, or a zip with TorchScript/export records)."""
    if path.suffix.lower() in TORCH_SUFFIXES:
        return True
    return path.is_file() and zipfile.is_zipfile(path) and _torch_kind(path) is not None


def needs_frontend(model: Path, data: Path | None, tokenizer: Path | None, input_shapes: Sequence[str]) -> bool:
    """Whether the quantize command must go through this module (anything but a plain ONNX/TFLite + .npz)."""
    is_text = data is not None and data.suffix.lower() == ".txt"
    return model.is_dir() or is_torch_file(model) or tokenizer is not None or is_text or bool(input_shapes)


def parse_input_shapes(specs: Sequence[str]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Parse ``NAME=1x3x32x32[:dtype]`` specs into ``{name: (shape, dtype)}`` (dtype defaults to float32).

    Raises:
        InputError: a spec that does not match the syntax, or an unknown dtype.
    """
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for spec in specs:
        m = _SPEC.match(spec.strip())
        if m is None:
            raise InputError(f"--input-shape: {spec!r} is not NAME=DxDx...[:dtype] (e.g. --input-shape x=1x3x32x32)")
        dtype = m["dtype"] or "float32"
        if dtype not in _DTYPES:
            raise InputError(f"--input-shape: dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
        out[m["name"].strip()] = (tuple(int(d) for d in m["dims"].split("x")), dtype)
    return out


def _example_tensors(shapes: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, Any]:
    torch = import_torch()
    gen = torch.Generator().manual_seed(0)
    tensors: dict[str, Any] = {}
    for name, (shape, dtype) in shapes.items():
        tdtype = getattr(torch, dtype)
        if tdtype.is_floating_point:
            tensors[name] = torch.randn(shape, generator=gen).to(tdtype)
        elif tdtype == torch.bool:
            tensors[name] = torch.ones(shape, dtype=torch.bool)
        else:  # token ids, indices: small non-negative values stay valid for most embeddings
            tensors[name] = torch.randint(0, 100, shape, generator=gen, dtype=tdtype)
    return tensors


def _torch_kind(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile, NotImplementedError, ValueError, EOFError, struct.error):
        return None  # a damaged zip ("zip file version 25.5", bad headers) is no PyTorch archive
    if any(n.endswith(("/archive_format", "/models/model.json")) for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/data.pkl") for n in names):
        return "pickle"
    return None


def load_torch_file(path: Path) -> tuple[Any, str, tuple[Any, ...] | None]:
    """Load a TorchScript or ``torch.export`` file: ``(module, kind, stored example inputs or None)``.

    Raises:
        InputError: the file is missing, not a PyTorch archive, or a plain ``torch.save`` checkpoint.
    """
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    torch = import_torch()
    kind = _torch_kind(path)
    if kind == "pickle":
        raise InputError(
            f"{path}: a torch.save checkpoint needs its Python class; save it with torch.jit.save or torch.export.save,"
            " or call tensorslim.from_torch(module, example_inputs) in Python"
        )
    if kind is None:
        raise InputError(f"{path}: not a TorchScript (torch.jit.save) or torch.export (torch.export.save) file")
    try:
        with warnings.catch_warnings():  # torch.jit.load is deprecated in favour of torch.export, still supported
            warnings.simplefilter("ignore", DeprecationWarning)
            if kind == "torchscript":
                return torch.jit.load(str(path), map_location="cpu"), kind, None
            program = torch.export.load(str(path))
    except Exception as e:
        raise InputError(f"{path}: PyTorch could not load it ({type(e).__name__}: {str(e)[:200]})") from e
    stored = program.example_inputs[0] if program.example_inputs else None
    return program.module(), kind, tuple(stored) if stored else None


def read_sentences(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, one sample each.

    Raises:
        InputError: the file is missing, unreadable, or has no text.
    """
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read it as UTF-8 text ({e}); give one sentence per line") from e
    lines = [line for line in lines if line]
    if not lines:
        raise InputError(f"{path}: no text; give one sentence per line")
    return lines


def load_tokenizer(path: Path) -> Any:
    """A Hugging Face tokenizer from a local folder (never from a hub).

    Raises:
        InputError: transformers is missing or the folder holds no tokenizer.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise InputError("--tokenizer needs the transformers package: pip install transformers") from e
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:
        raise InputError(
            f"--tokenizer {path}: no tokenizer files there ({type(e).__name__}); give a model folder"
        ) from e


def tokenized_feeds(tokenizer: Any, sentences: Sequence[str], names: Sequence[str] | None = None) -> dict[str, Any]:
    """Int64 feeds for ``sentences``, padded and truncated to one fixed length (``min(128, model max)``).

    Args:
        tokenizer: a Hugging Face tokenizer.
        sentences: the texts.
        names: keep only these inputs (in this order); ``None`` keeps all the tokenizer returns.
    """
    seq = min(MAX_SEQ_LEN, int(getattr(tokenizer, "model_max_length", MAX_SEQ_LEN) or MAX_SEQ_LEN))
    enc = tokenizer(list(sentences), padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    feeds = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
    if names is None:
        return feeds
    missing = [n for n in names if n not in feeds]
    if missing:
        raise InputError(f"--tokenizer: the model takes {', '.join(missing)}, which the tokenizer does not produce")
    return {n: feeds[n] for n in names}


def _hf_module(path: Path) -> Any:
    try:
        from transformers import AutoModel
    except ImportError as e:
        raise InputError(f"{path}: a Hugging Face model folder needs transformers: pip install transformers") from e
    try:
        try:
            model = AutoModel.from_pretrained(str(path), local_files_only=True, attn_implementation="eager")
        except (ValueError, TypeError):
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
    except Exception as e:
        raise InputError(f"{path}: transformers could not load the model ({type(e).__name__}: {str(e)[:200]})") from e
    return model.eval()


def _hf_wrapper(model: Any, names: list[str]) -> Any:
    """A module taking the tokenizer's tensors positionally and returning the model's first output."""
    torch = import_torch()

    class _FirstOutput(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True)))[0]

    return _FirstOutput().eval()


def prepare_input(
    model: Path,
    *,
    output: Path,
    data: Path | None,
    tokenizer: Path | None,
    input_shapes: Sequence[str],
    use_data: bool,
) -> PreparedInput:
    """Turn what the user gave the quantize command into an ONNX file and (optionally) a dataset.

    Args:
        model: an ONNX file, a TorchScript/``torch.export`` file, or a Hugging Face model folder.
        output: the quantized model's path; an exported float model goes next to it (``<stem>.float.onnx``).
        data: ``.txt`` sentences (with a tokenizer) or ``.npz``.
        tokenizer: a folder with Hugging Face tokenizer files (default for a model folder: the folder).
        input_shapes: ``NAME=1x3x32x32[:dtype]`` specs for a PyTorch file's example inputs.
        use_data: build a dataset from text data (calibration needs it; dynamic mode does not).

    Raises:
        InputError: anything missing or inconsistent, with the fix.
    """
    notes: list[str] = []
    is_text = data is not None and data.suffix.lower() == ".txt"
    if is_text and tokenizer is None and not model.is_dir():
        raise InputError(f"--data {data}: text data needs --tokenizer PATH (a folder with the tokenizer files)")
    if model.is_dir() and not (model / "config.json").is_file():  # before the tokenizer: say what the folder lacks
        raise InputError(
            f"{model}: is a folder but not a Hugging Face model (no config.json); pass the model file (.onnx, .tflite)"
        )
    tok_path = tokenizer or (model if model.is_dir() else None)
    tok = load_tokenizer(tok_path) if tok_path is not None else None
    sentences = read_sentences(data) if is_text and data is not None else None
    float_path = output.with_name(f"{output.stem}.float.onnx")

    if model.is_dir():
        if not (model / "config.json").is_file():
            raise InputError(f"{model}: a folder must be a Hugging Face model (config.json); give a file otherwise")
        if tok is None:  # pragma: no cover - tok_path is the folder
            raise InputError(f"{model}: no tokenizer")
        sample = tokenized_feeds(tok, (sentences or [_FALLBACK_TEXT])[:2])
        hf = _hf_module(model)
        import inspect

        accepted = inspect.signature(hf.forward).parameters
        names = [n for n in sample if n in accepted]
        torch = import_torch()
        args = tuple(torch.from_numpy(sample[n]) for n in names)
        axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"output": {0: "batch", 1: "sequence"}}
        from_torch(_hf_wrapper(hf, names), args, input_names=names, output_names=["output"], dynamic_axes=axes,
                   output=float_path)  # fmt: skip
        notes.append(f"exported {model} (first output, dynamic batch and sequence) to {float_path}")
        src, exported = float_path, True
    elif is_torch_file(model):
        module, kind, stored = load_torch_file(model)
        shapes = parse_input_shapes(input_shapes)
        if shapes:
            example: Any = _example_tensors(shapes)
        elif stored is not None:
            example = stored
            notes.append("example inputs: the ones stored in the torch.export file")
        else:
            raise InputError(
                f"{model}: a TorchScript file has no input signature; give --input-shape NAME=1x3x32x32 per input"
            )
        from_torch(module, example, output=float_path)
        notes.append(f"exported {model} ({kind}, fixed shapes of the example inputs) to {float_path}")
        src, exported = float_path, True
    else:
        if input_shapes:
            raise InputError("--input-shape applies to PyTorch files (.pt/.pt2); an ONNX model has its own signature")
        src, exported = model, False

    dataset = None
    if sentences is not None and tok is not None and use_data:
        from tensorslim.runtime.ort import OrtRuntime

        names_in = [spec.name for spec in OrtRuntime(src).inputs]
        dataset = Dataset(tokenized_feeds(tok, sentences, names_in), source=str(data))
        notes.append(
            f"{len(sentences)} sentence(s) from {data} tokenized to {dataset.inputs[names_in[0]].shape[1]} tokens"
        )
    elif sentences is not None:
        used = "served as example inputs only" if exported else "were not used"
        notes.append(f"dynamic mode needs no calibration data: the sentences {used}")
    return PreparedInput(model=src, dataset=dataset, exported=exported, notes=notes)


def resolve_cli_input(
    model: Path,
    output: Path,
    data: Path | None,
    tokenizer: Path | None,
    input_shapes: Sequence[str],
    mode: str,
) -> tuple[Path, Path | Dataset | None, list[str]]:
    """The quantize command's hook: ``(ONNX model, data for the pass, notes)``; plain ONNX passes through.

    Raises:
        InputError: see :func:`prepare_input`.
    """
    if not needs_frontend(model, data, tokenizer, input_shapes):
        return model, data, []
    is_text = data is not None and data.suffix.lower() == ".txt"
    prep = prepare_input(
        model, output=output, data=data, tokenizer=tokenizer, input_shapes=input_shapes, use_data=mode != "dynamic"
    )
    return prep.model, prep.dataset if is_text else data, prep.notes
