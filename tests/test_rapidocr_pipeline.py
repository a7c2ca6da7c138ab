"""The RapidOCR pipeline benchmark's pieces: rendered pages, calibration folders, box-to-line scoring."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("PIL")
pytest.importorskip("cv2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import ocr_pages as op
import rapidocr_pipeline as rp


@pytest.fixture(scope="module")
def pages() -> list[op.Page]:
    return op.render_pages(2, seed=7)


def test_pages_are_deterministic_and_seeds_do_not_share_pages(pages: list[op.Page]) -> None:
    again = op.render_pages(2, seed=7)
    for a, b in zip(pages, again, strict=True):
        assert np.array_equal(a.image, b.image)
        assert a.lines == b.lines
    other = op.render_pages(2, seed=1007)
    assert all(not np.array_equal(a.image, b.image) for a in pages for b in other)


def test_lines_lie_on_the_page_one_above_the_other(pages: list[op.Page]) -> None:
    h, w = op.PAGE_SIZE
    for page in pages:
        assert page.image.shape == (h, w, 3)
        assert len(page.lines) >= 8
        for ln in page.lines:
            x0, y0, x1, y1 = ln.box
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert ln.text.strip() and "  " not in ln.text
            assert (page.image[y0:y1, x0:x1].min(axis=2) < 128).any()  # ink inside the box
        tops = [ln.box[1] for ln in page.lines]
        bottoms = [ln.box[3] for ln in page.lines]
        assert all(b < t for b, t in zip(bottoms, tops[1:], strict=False))


def test_calibration_folders_hold_what_each_model_takes(pages: list[op.Page], tmp_path: Path) -> None:
    dirs = op.write_calibration(pages[:1], tmp_path)
    n_lines = len(pages[0].lines)
    det, cls = (op.folder_feeds(dirs[k]) for k in ("det", "cls"))
    rec = op.padded_feeds(dirs["rec"], op.REC_CALIB_SHAPE)  # whole lines as cut, laid out as --resize pad does
    assert det.shape == (1, 3, *op.PAGE_SIZE)
    assert cls.shape == (n_lines, 3, *op.CLS_SHAPE)
    assert rec.shape == (n_lines, 3, *op.REC_CALIB_SHAPE)
    # each line at height 48, its aspect kept, then zeros (RapidOCR's padding) up to the width
    widths = [48 * c.shape[1] / c.shape[0] for c in (op.crop_line(pages[0], ln) for ln in pages[0].lines)]
    for x, w in zip(rec, widths, strict=True):
        assert np.all(x[:, :, int(np.ceil(w)) + 1 :] == 0.0) and np.any(x[:, :, : int(w) - 1] != 0.0)
    for x in (det, rec, cls):
        assert x.dtype == np.float32 and x.min() >= -1.0 and x.max() <= 1.0
    # BGR order, RapidOCR's normalisation: the page's first pixel comes back
    b, g, r = det[0, :, 0, 0]
    assert np.allclose([r, g, b], pages[0].image[0, 0] / 127.5 - 1.0, atol=1e-6)


def _box(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_boxes_are_assigned_to_their_lines_and_strays_counted(pages: list[op.Page]) -> None:
    page = pages[0]
    first, second = page.lines[0], page.lines[1]
    x0, y0, x1, y1 = first.box
    mid = (x0 + x1) / 2
    head, _, tail = first.text.partition(" ")
    result = [
        [_box(mid, y0, x1, y1), tail, 0.9],  # out of order: sorted left to right
        [_box(x0, y0, mid, y1), head, 0.9],
        [_box(*second.box), second.text[:-1], 0.9],  # one character lost
        [_box(0, page.image.shape[0] - 5, 40, page.image.shape[0]), "zz", 0.9],  # overlaps no line
    ]
    lines, stray = rp.page_lines(page, result)
    assert lines[0] == first.text and lines[1] == second.text[:-1]
    assert all(t == "" for t in lines[2:])
    assert stray == 2
    truth = [[ln.text for ln in page.lines]]
    missing = sum(len(ln.text) for ln in page.lines[2:])
    expected = 1.0 - (1 + missing + 2) / sum(len(t) for t in truth[0])
    assert rp.char_accuracy([lines], truth, [stray]) == pytest.approx(expected)
    assert rp.char_accuracy(truth, truth, [0]) == 1.0
    assert rp.page_lines(page, None) == ([""] * len(page.lines), 0)


@settings(max_examples=60, deadline=None)
@given(st.text("abc ", max_size=8), st.text("abc ", max_size=8), st.text("abc ", max_size=8))
def test_edit_distance_is_a_metric(a: str, b: str, c: str) -> None:
    d = op.edit_distance
    assert d(a, b) == d(b, a)
    assert (d(a, b) == 0) == (a == b)
    assert abs(len(a) - len(b)) <= d(a, b) <= max(len(a), len(b))
    assert d(a, c) <= d(a, b) + d(b, c)
    assert d(a, a + c) == len(c)
