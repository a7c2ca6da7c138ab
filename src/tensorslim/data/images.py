"""Calibration data from a folder of images, with a declared preprocessing.

The preprocessing must be the one the model was trained with; tensorslim cannot guess it, so every step
is spelled out in :class:`ImagePreprocess` and applied in this order::

    file -> decode (Pillow) -> colour (RGB, BGR or L) -> resize to (H, W) (stretch, shorter side + centre crop,
         or fit inside + pad) -> float32 * scale -> (x - mean) / std per channel -> layout (NCHW or NHWC) -> dtype

Files are read in sorted name order (the same folder gives the same tensor), only files with an image
suffix are read, and a file that cannot be decoded is an error naming it. The tensor is checked against
the model input (rank 4, channels on the declared axis, fixed H and W) before any file is read.

Pillow is an optional dependency (``pip install 'tensorslim[images]'``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tensorslim.errors import ConfigError, InputError
from tensorslim.runtime.base import TensorSpec

__all__ = ["IMAGE_SUFFIXES", "ImagePreprocess", "image_files", "load_images", "preprocess_image"]

#: File suffixes read as images (lower case).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

_RESIZE = ("stretch", "center_crop", "pad")
_LAYOUTS = ("NCHW", "NHWC")
_COLORS = ("RGB", "BGR", "L")
_DTYPES = ("float32", "float16", "uint8", "int8")


@dataclass(frozen=True)
class ImagePreprocess:
    """How image files become the model input.

    Attributes:
        size: ``(height, width)`` after resizing; ``None`` takes the model input's fixed H and W.
        resize: ``stretch`` (resize to exactly H x W), ``center_crop`` (resize the shorter side to fit,
            keep the aspect ratio, crop the centre) or ``pad`` (keep the aspect ratio, fit inside H x W at the
            top left, the rest zeros of the normalized input: how OCR recognizers such as PaddleOCR's batch text
            lines of different widths).
        layout: ``NCHW`` (channels first, PyTorch) or ``NHWC`` (channels last, TensorFlow).
        color: ``RGB``, ``BGR`` (OpenCV-trained models) or ``L`` (one grey channel).
        scale: factor applied to the 0-255 pixel values first, e.g. ``1/255``.
        mean: per-channel value subtracted after scaling (one value, or one per channel; empty: none).
        std: per-channel divisor after the mean (one value, or one per channel; empty: none).
        dtype: element type of the tensor: ``float32``, ``float16``, ``uint8`` or ``int8``.
        input_name: the model input to fill; ``None`` when the model has a single input.
    """

    size: tuple[int, int] | None = None
    resize: str = "stretch"
    layout: str = "NCHW"
    color: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    dtype: str = "float32"
    input_name: str | None = None

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or any(not isinstance(v, int) or v < 1 for v in self.size)):
            raise ConfigError(f"size: must be (height, width) with positive integers, got {self.size!r}")
        for name, value, allowed in (
            ("resize", self.resize, _RESIZE),
            ("layout", self.layout, _LAYOUTS),
            ("color", self.color, _COLORS),
            ("dtype", self.dtype, _DTYPES),
        ):
            if value not in allowed:
                raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"scale: must be a positive finite number, got {self.scale!r}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (0, 1, self.channels):
                raise ConfigError(f"{name}: give 1 or {self.channels} values for color {self.color}, got {len(values)}")
            if any(not math.isfinite(v) for v in values):
                raise ConfigError(f"{name}: values must be finite, got {values!r}")
        if any(v <= 0 for v in self.std):
            raise ConfigError(f"std: values must be positive, got {self.std!r}")

    @property
    def channels(self) -> int:
        """Channels of the tensor: 3 for RGB/BGR, 1 for L."""
        return 1 if self.color == "L" else 3

    def describe(self) -> str:
        """One line for notes and reports."""
        size = "model H x W" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        norm = f", mean {list(self.mean)}, std {list(self.std)}" if self.mean or self.std else ""
        return f"{self.color} {size} ({self.resize}), {self.layout}, scale {self.scale:.6g}{norm}, {self.dtype}"


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as e:
        raise InputError(
            "reading a folder of images needs Pillow: pip install 'tensorslim[images]' (or pip install pillow)"
        ) from e
    return Image


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Files of ``folder`` with an image suffix (:data:`IMAGE_SUFFIXES`), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def preprocess_image(path: str | os.PathLike[str], pre: ImagePreprocess, size: tuple[int, int]) -> np.ndarray:
    """One image file as a ``C x H x W`` (NCHW) or ``H x W x C`` (NHWC) array, no batch axis.

    Raises:
        InputError: the file cannot be decoded as an image; the message names it.
    """
    image_mod = _pil()
    p = Path(path)
    try:
        with image_mod.open(p) as im:
            im.load()
            img = im.convert("L" if pre.color == "L" else "RGB")
    except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ValueError...
        raise InputError(f"{p}: not a readable image ({type(e).__name__}: {e}); remove or replace the file") from e
    h, w = size
    bilinear = image_mod.Resampling.BILINEAR
    fit: tuple[int, int] | None = None  # pad: the resized image's (H, W) at the top left
    if pre.resize == "stretch":
        img = img.resize((w, h), bilinear)
    elif pre.resize == "pad":
        k = min(h / img.height, w / img.width)
        fit = (min(h, max(1, round(img.height * k))), min(w, max(1, round(img.width * k))))
        img = img.resize((fit[1], fit[0]), bilinear)
    else:
        k = max(h / img.height, w / img.width)
        rw, rh = max(w, round(img.width * k)), max(h, round(img.height * k))
        img = img.resize((rw, rh), bilinear)
        left, top = (rw - w) // 2, (rh - h) // 2
        img = img.crop((left, top, left + w, top + h))
    x = np.asarray(img, dtype=np.float32)
    x = x[:, :, None] if x.ndim == 2 else x
    if pre.color == "BGR":
        x = x[:, :, ::-1]
    x = x * np.float32(pre.scale)
    if pre.mean:
        x = np.subtract(x, np.asarray(pre.mean, dtype=np.float32), dtype=np.float32)
    if pre.std:
        x = np.divide(x, np.asarray(pre.std, dtype=np.float32), dtype=np.float32)
    if fit is not None:
        full = np.zeros((h, w, x.shape[2]), np.float32)
        full[: fit[0], : fit[1]] = x
        x = full
    if pre.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    if pre.dtype in ("uint8", "int8"):
        info = np.iinfo(pre.dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return np.ascontiguousarray(x.astype(pre.dtype))


def _static(d: int | str | None) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def _target(specs: Sequence[TensorSpec], pre: ImagePreprocess, folder: Path) -> tuple[str, tuple[int, int]]:
    """The model input to fill and the (H, W) to resize to; checks layout, channels and size against it."""
    if pre.input_name is not None:
        found = [s for s in specs if s.name == pre.input_name]
        if specs and not found:
            raise InputError(
                f"image input {pre.input_name!r} is not a model input (inputs: {', '.join(s.name for s in specs)})"
            )
    elif len(specs) > 1:
        raise InputError(
            f"{folder}: the model has {len(specs)} inputs ({', '.join(s.name for s in specs)}); images fill one: "
            "name it with ImagePreprocess(input_name=...), or give .npz data with every input"
        )
    else:
        found = list(specs)
    if not found:  # no signature available (model too large to open here): trust the declaration
        if pre.size is None:
            raise InputError(f"{folder}: give the image size (--image-size HxW); the model's could not be read")
        return pre.input_name or "input", pre.size
    spec = found[0]
    shape = spec.shape
    if len(shape) != 4:
        raise InputError(
            f"model input {spec.name!r} has shape {list(shape)}, not an image batch (rank 4, NCHW or NHWC); "
            "give .npz data instead"
        )
    c_axis, h_axis, w_axis = (1, 2, 3) if pre.layout == "NCHW" else (3, 1, 2)
    other, other_c = ("NHWC", 3) if pre.layout == "NCHW" else ("NCHW", 1)
    c = shape[c_axis]
    if spec.dtype != np.dtype(pre.dtype):
        raise InputError(
            f"model input {spec.name!r} is {spec.dtype} but the images are made {pre.dtype}; set dtype={spec.dtype}"
        )
    if isinstance(c, int) and c > 0 and c != pre.channels:
        hint = ""
        if isinstance(shape[other_c], int) and shape[other_c] == pre.channels:
            hint = f"; the model is {other}: pass --layout {other}"
        elif c == 1 or c == 3:
            hint = f"; pass --color {'L' if c == 1 else 'RGB'}"
        raise InputError(
            f"model input {spec.name!r} has shape {list(shape)}: {c} channel(s) on axis {c_axis} for layout "
            f"{pre.layout}, the images give {pre.channels} ({pre.color}){hint}"
        )
    fixed = tuple(_static(shape[a]) for a in (h_axis, w_axis))
    if pre.size is None:
        if None in fixed:
            raise InputError(
                f"model input {spec.name!r} has shape {list(shape)} with a dynamic height or width; "
                "pass --image-size HxW"
            )
        return spec.name, (int(fixed[0]), int(fixed[1]))  # type: ignore[arg-type]
    for axis, want, got in ((h_axis, fixed[0], pre.size[0]), (w_axis, fixed[1], pre.size[1])):
        if want is not None and want != got:
            raise InputError(
                f"model input {spec.name!r} has shape {list(shape)} ({want} on axis {axis}) but --image-size is "
                f"{pre.size[0]}x{pre.size[1]}; pass --image-size {fixed[0] or got}x{fixed[1] or got}"
            )
    return spec.name, pre.size


def load_images(
    folder: str | os.PathLike[str],
    specs: Sequence[TensorSpec],
    pre: ImagePreprocess,
    *,
    max_samples: int | None = None,
) -> Any:
    """The images of ``folder`` (sorted by name, at most ``max_samples``) as a :class:`~tensorslim.data.Dataset`.

    Raises:
        InputError: not a folder, no image files, Pillow missing, an unreadable file (named), or a layout,
            channel count, size or dtype that contradicts the model input (the message names the fix).
    """
    from tensorslim.data.dataset import Dataset
    from tensorslim.data.load import resolve_layouts

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: image data must be a folder of image files; check the path")
    name, size = _target(specs, pre, root)
    files = image_files(root)
    if not files:
        raise InputError(
            f"{root}: the folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); check the path"
        )
    if max_samples is not None:
        files = files[:max_samples]
    _pil()
    from tensorslim.progress import track

    arrays = [preprocess_image(f, pre, size) for f in track(files, "reading images")]
    batch = np.stack(arrays)
    if np.issubdtype(batch.dtype, np.floating) and not np.all(np.isfinite(batch)):
        raise InputError(f"{root}: the preprocessed images hold NaN or infinite values; check --mean, --std, --scale")
    note = f"{len(files)} image(s) from {root}: {pre.describe()}"
    lays = resolve_layouts(specs)
    axes = {k: v.batch_axis for k, v in lays.items()}
    fixed = lays[name].fixed_batch if name in lays else None
    return Dataset({name: batch}, source=str(root), notes=[note], batch_axes=axes, fixed_batch=fixed)
