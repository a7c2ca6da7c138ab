"""The TFLite benchmark end to end (trains a Keras CNN: slow, needs TensorFlow from the tflite-bench extra)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_tflite_digits_benchmark_meets_its_targets(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import tflite_digits

    assert tflite_digits.main(["--epochs", "8", "--seconds", "0.3", "--out", str(tmp_path)]) == 0
