"""The fuzz harness (``tests/fuzz.py``) for a few seconds: mutated ONNX, TFLite, .tslim, recipe and .npz inputs
end in exit 0 or 2, one error line, no traceback or signal, inputs unchanged, nothing left at -o, memory capped.

``TENSORSLIM_FUZZ_SECONDS`` (default 8) and ``TENSORSLIM_FUZZ_SEED`` run it longer or elsewhere in the space.
"""

from __future__ import annotations

import os
import sys

import pytest

import fuzz


@pytest.mark.skipif(not hasattr(os, "fork") or not sys.platform.startswith("linux"), reason="forks a child per case")
def test_mutated_inputs_keep_the_cli_contract() -> None:
    from tensorslim.commands import build_app

    build_app()  # every command module imported once, before the forks

    seconds = float(os.environ.get("TENSORSLIM_FUZZ_SECONDS", "8"))
    seed = int(os.environ.get("TENSORSLIM_FUZZ_SEED", "0"))
    s = fuzz.fuzz(seconds, seed, log=lambda line: None)
    assert set(s.cases) == set(fuzz.KINDS)
    assert "exit 0" in s.exits or "exit 2" in s.exits
    assert not s.findings, "\n".join(f"{f.kind} {f.command} ({f.mutation}): {f.problem}" for f in s.findings)
