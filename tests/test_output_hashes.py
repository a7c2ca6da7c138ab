"""Every mode writes the same bytes as before the shell refactor (issue 17).

``tests/data/output_hashes.json`` was recorded with ``scripts/output_hashes.py --record`` before the
refactor began; this test reruns the same commands and compares. MiniLM rows are compared only when the
local export is byte-identical to the recorded one (another torch version exports other bytes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_mode_writes_the_recorded_bytes() -> None:
    args = [sys.executable, str(ROOT / "scripts" / "output_hashes.py"), "--check", str(ROOT / "tests/data/output_hashes.json")]
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "byte-identical" in proc.stdout
