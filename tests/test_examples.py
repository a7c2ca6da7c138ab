"""The bundled example's data: split sizes pinned, and no image in two of training, calibration, selection, test."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tensorslim.examples import (
    example_calib_data_path,
    example_model_path,
    example_test_data_path,
    example_val_data_path,
)

SIZES = {"calib": 200, "val": 300, "test": 360}
PATHS = {"calib": example_calib_data_path, "val": example_val_data_path, "test": example_test_data_path}


def _rows(x: np.ndarray) -> set[str]:
    return {hashlib.sha256(np.ascontiguousarray(r, dtype=np.float32).tobytes()).hexdigest() for r in x}


def _load(split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(PATHS[split]()) as z:
        return z["input"], z["label"]


def test_split_sizes_are_pinned_and_the_splits_are_disjoint() -> None:
    hashes = {}
    for split, n in SIZES.items():
        x, y = _load(split)
        assert x.shape == (n, 1, 32, 32) and x.dtype == np.float32 and y.shape == (n,) and y.dtype == np.int64
        assert set(np.unique(y).tolist()) == set(range(10))  # stratified: every class in every split
        hashes[split] = _rows(x)
        assert len(hashes[split]) == n  # no image twice within a split
    names = list(hashes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not hashes[a] & hashes[b], f"{a} and {b} share images"


def test_no_split_overlaps_the_training_data() -> None:
    """Rebuild the training split as the script does and check it shares no image with the bundled files."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    script = Path(__file__).resolve().parent.parent / "scripts" / "make_digits_example.py"
    spec = importlib.util.spec_from_file_location("make_digits_example", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    splits = mod.load_data(mod.SEED)
    train = _rows(splits["train"][0])
    assert len(train) == 1797 - sum(SIZES.values())
    for split in SIZES:
        x, y = _load(split)
        np.testing.assert_array_equal(x, splits[split][0])  # the bundled files are the script's splits
        np.testing.assert_array_equal(y, splits[split][1])
        assert not train & _rows(x), f"{split} overlaps the training data"


def test_float_model_scores_on_the_held_out_splits() -> None:
    from tensorslim.evaluate import evaluate

    for split, floor in (("val", 0.97), ("test", 0.97)):
        rep = evaluate(example_model_path(), example_model_path(), PATHS[split]())
        acc = rep.outputs[0].reference_accuracy
        assert acc is not None and floor <= acc < 1.0, (split, acc)  # held out: not the 100 % of training images
