"""Rendered text pages for the RapidOCR pipeline benchmark: deterministic pages, their text and line boxes.

A page (default 736 wide, 960 high: RapidOCR's det takes it as it is, its shorter side already 736 and both sides
multiples of 32) has a light background and 12-24 left-aligned text lines, one above the other, each of random
words (from ``realmodels``' sentence pool) and number tokens (integers, decimals, dates, codes, amounts), in one of
the available fonts (:func:`font_files`), a random size and a dark colour. The same seed and the same fonts give
the same pixels; the fonts found are part of the benchmark's output.

Calibration folders hold what each model sees in RapidOCR's pipeline, as image files:

* ``det/``: whole pages;
* ``rec/``: each line cropped from a page (with a margin, as the detector's boxes have), resized to height 48 with
  its aspect kept, as RapidOCR's ``TextRecognizer.resize_norm_img`` does (it widens the input for long lines), and
  cut into 48 x 320 windows, the last padded on the right with mid-grey (the pixel value of RapidOCR's zero
  padding after normalisation): the folder loader needs one size;
* ``cls/``: the same crops laid out as ``TextClassifier.resize_norm_img`` does for 48 x 192 (squeezed when
  wider, padded with mid-grey), every other one rotated 180 degrees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import realmodels as rm

#: Font files tried, in this order, in :data:`FONT_DIRS`; ``None`` in :func:`font_files` is Pillow's own font.
FONT_NAMES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
              "DejaVuSansCondensed.ttf")  # fmt: skip
PAGE_SIZE = (960, 736)  # (height, width)
REC_SHAPE = (48, 320)
#: rec calibration input: whole text lines at height 48, fitted into 960 and padded (``--resize pad``), as RapidOCR
#: batches lines of different widths (a batch is as wide as its widest line; on rendered pages 360-1180 px)
REC_CALIB_SHAPE = (48, 960)
CLS_SHAPE = (48, 192)
PAD = 128  # RapidOCR pads normalised crops with 0, i.e. pixel 127.5


def font_dirs() -> list[Path]:
    """System DejaVu fonts, then the copy OpenCV (a RapidOCR dependency) ships with its Qt plugin."""
    dirs = [Path("/usr/share/fonts/truetype/dejavu")]
    try:
        import cv2

        dirs.append(Path(cv2.__file__).parent / "qt" / "fonts")
    except ImportError:
        pass
    return [d for d in dirs if d.is_dir()]


def font_files() -> list[Path | None]:
    """The fonts pages are drawn with: Pillow's default (``None``) and every :data:`FONT_NAMES` file found."""
    found: list[Path | None] = [None]
    for name in FONT_NAMES:
        hit = next((d / name for d in font_dirs() if (d / name).is_file()), None)
        if hit is not None:
            found.append(hit)
    return found


def _font(path: Path | None, size: int) -> object:
    from PIL import ImageFont

    return ImageFont.load_default(size=size) if path is None else ImageFont.truetype(str(path), size)


_POOL: list[str] = []


def _word_pool() -> list[str]:
    if not _POOL:
        text = " ".join(rm.load_sentences(400, offset=1400))
        _POOL.extend(w.strip(".,;:()'\"") for w in text.split() if w.strip(".,;:()'\"").isascii())
    return [w for w in _POOL if w]


def _number(rng: np.random.Generator) -> str:
    kind = int(rng.integers(0, 5))
    if kind == 0:
        return str(int(rng.integers(0, 100000)))
    if kind == 1:
        return f"{rng.uniform(0, 1000):.2f}"
    if kind == 2:
        return f"{int(rng.integers(1990, 2031))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    if kind == 3:
        return f"{chr(65 + int(rng.integers(0, 26)))}{chr(65 + int(rng.integers(0, 26)))}-{int(rng.integers(0, 10000))}"
    return f"${int(rng.integers(1, 999))}.{int(rng.integers(0, 100)):02d}"


def line_text(rng: np.random.Generator) -> str:
    """2-6 tokens: mostly words, about one in four a number token."""
    pool = _word_pool()
    return " ".join(
        _number(rng) if rng.random() < 0.25 else pool[int(rng.integers(0, len(pool)))]
        for _ in range(int(rng.integers(2, 7)))
    )


@dataclass(frozen=True)
class Line:
    """One rendered text line: its text and its ink box ``(x0, y0, x1, y1)`` in page pixels."""

    text: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Page:
    """A rendered page (``H x W x 3`` uint8, RGB) and its lines, top to bottom."""

    image: np.ndarray
    lines: tuple[Line, ...]

    @property
    def bgr(self) -> np.ndarray:
        """The page in OpenCV's channel order, as RapidOCR takes arrays."""
        return np.ascontiguousarray(self.image[:, :, ::-1])


def render_page(seed: Sequence[int], fonts: Sequence[Path | None], size: tuple[int, int] = PAGE_SIZE) -> Page:
    """One page from ``seed`` (a NumPy seed sequence entropy): lines top to bottom until the page is full."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(list(seed))
    h, w = size
    bg = tuple(int(v) for v in rng.integers(225, 256, 3))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    lines: list[Line] = []
    y = int(rng.integers(16, 48))
    while True:
        px = int(rng.integers(18, 38))
        font = _font(fonts[int(rng.integers(0, len(fonts)))], px)
        text = line_text(rng)
        x = int(rng.integers(16, w // 5))
        box = draw.textbbox((x, y), text, font=font)  # type: ignore[arg-type]
        while box[2] > w - 16 and " " in text:  # too wide: drop the last token
            text = text.rsplit(" ", 1)[0]
            box = draw.textbbox((x, y), text, font=font)  # type: ignore[arg-type]
        if box[3] > h - 16 or box[2] > w - 16:
            break
        ink = tuple(int(v) for v in rng.integers(0, 90, 3))
        draw.text((x, y), text, fill=ink, font=font)  # type: ignore[arg-type]
        lines.append(Line(text, (int(box[0]), int(box[1]), int(box[2]), int(box[3]))))
        y = box[3] + int(rng.integers(px // 2, 2 * px))
    return Page(np.asarray(img), tuple(lines))


def render_pages(n: int, seed: int, size: tuple[int, int] = PAGE_SIZE) -> list[Page]:
    """``n`` pages; page ``i`` is drawn from the seed ``(seed, i)``, so sets with different seeds never share one."""
    fonts = font_files()
    return [render_page((seed, i), fonts, size) for i in range(n)]


def crop_line(page: Page, line: Line) -> np.ndarray:
    """The line's box with a margin of a quarter of its height on every side (RGB)."""
    x0, y0, x1, y1 = line.box
    m = max(2, (y1 - y0) // 4)
    h, w = page.image.shape[:2]
    return page.image[max(0, y0 - m) : min(h, y1 + m), max(0, x0 - m) : min(w, x1 + m)]


def text_layout(crop: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``crop`` as RapidOCR's cls preprocessing lays it out for an ``H x W`` input: height H, aspect kept, squeezed
    to W when wider, padded on the right with :data:`PAD`."""
    import cv2

    th, tw = shape
    h, w = crop.shape[:2]
    rw = min(tw, math.ceil(th * w / float(h)))
    out = np.full((th, tw, 3), PAD, dtype=np.uint8)
    out[:, :rw] = cv2.resize(crop, (rw, th))
    return out


def write_calibration(pages: Sequence[Page], root: Path) -> dict[str, Path]:
    """The ``det``, ``rec`` and ``cls`` calibration folders under ``root`` (PNG files); returns them by name."""
    from PIL import Image

    dirs = {k: root / k for k in ("det", "rec", "cls")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    k = 0
    for i, page in enumerate(pages):
        Image.fromarray(page.image).save(dirs["det"] / f"page{i:04d}.png")
        for line in page.lines:
            crop = crop_line(page, line)
            Image.fromarray(crop).save(dirs["rec"] / f"line{k:05d}.png")  # as cropped: --resize pad lays it out
            cls_crop = crop[::-1, ::-1] if k % 2 else crop
            Image.fromarray(text_layout(np.ascontiguousarray(cls_crop), CLS_SHAPE)).save(
                dirs["cls"] / f"line{k:05d}.png"
            )
            k += 1
    return dirs


def padded_feeds(folder: Path, shape: tuple[int, int], limit: int | None = None) -> np.ndarray:
    """A folder's PNGs through tensorslim's ``--resize pad`` preprocessing for an ``H x W`` input (BGR,
    ``(x / 255 - 0.5) / 0.5``, NCHW): the tensor ``tensorslim quantize`` calibrates on, for other tools."""
    from tensorslim.data.images import ImagePreprocess, image_files, preprocess_image

    pre = ImagePreprocess(size=shape, resize="pad", color="BGR", mean=(0.5,), std=(0.5,))
    return np.stack([preprocess_image(f, pre, shape) for f in image_files(folder)[:limit]])


def folder_feeds(folder: Path, limit: int | None = None) -> np.ndarray:
    """A folder's PNGs (sorted by name) as RapidOCR's models take them: BGR, ``(x / 255 - 0.5) / 0.5``, NCHW."""
    from PIL import Image

    files = sorted(folder.glob("*.png"))[:limit]
    arrays = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32)[:, :, ::-1] for f in files]
    return np.stack([((a / 255.0 - 0.5) / 0.5).transpose(2, 0, 1) for a in arrays]).astype(np.float32)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
