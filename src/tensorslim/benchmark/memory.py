"""Peak-memory measurement of a model in a fresh subprocess.

Each model is loaded by ``python -m tensorslim.benchmark._worker`` in its own process, which reports
three numbers: the RSS of the bare interpreter (numpy, onnxruntime and the inputs loaded, no session),
the peak RSS up to the end of session creation, and the peak RSS after a few inference runs.

Why ``VmHWM`` and not ``getrusage``: on Linux ``ru_maxrss`` survives ``execve`` - the kernel folds the
high-water mark of the pre-exec address space into the new process, and with ``vfork``/``posix_spawn``
(what :mod:`subprocess` uses) that address space is the *parent's*. A child spawned from a 400 MB
parent therefore reports ``ru_maxrss`` >= 400 MB before doing anything, and
``getrusage(RUSAGE_CHILDREN)`` inherits the same error. ``VmHWM`` in ``/proc/self/status`` belongs to
the child's own address space and is exact; it can also be reset (``/proc/self/clear_refs``) to isolate
the session phase. ``ru_maxrss`` is only the fallback where ``/proc`` does not exist.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .report import MemoryStats

__all__ = ["WORKER_MODULE", "current_rss", "measure_memory", "peak_rss", "reset_peak_rss"]

log = logging.getLogger(__name__)

WORKER_MODULE = "tensorslim.benchmark._worker"
RESULT_MARKER = "TENSORSLIM_MEMORY_RESULT "


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def current_rss() -> int:
    """Resident set size of this process now, in bytes."""
    kib = _proc_status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss() -> tuple[int, str]:
    """Peak resident set size of this process in bytes, and where it was read (``VmHWM``/``ru_maxrss``)."""
    kib = _proc_status_kib("VmHWM")
    if kib is not None:
        return kib * 1024, "VmHWM"
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return (int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024), "ru_maxrss"


def reset_peak_rss() -> bool:
    """Reset the peak-RSS counter to the current RSS (Linux >= 4.0); return whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _src_root() -> str:
    # .../src/tensorslim/benchmark/memory.py -> .../src
    return str(Path(__file__).resolve().parents[2])


def measure_memory(
    model_path: str | os.PathLike[str],
    inputs: Mapping[str, np.ndarray],
    *,
    threads: int = 1,
    runs: int = 5,
    timeout_s: float = 600.0,
) -> MemoryStats:
    """Load and run one model in a fresh subprocess and return its memory figures.

    Args:
        model_path: The ``.onnx`` file.
        inputs: Feed dict for the model (only the model's own inputs).
        threads: Intra-op threads, as in the timing session.
        runs: Inference runs before reading the final peak.
        timeout_s: Kill the worker after this many seconds.

    Returns:
        The worker's :class:`MemoryStats`.

    Raises:
        RuntimeError: The worker failed, timed out or printed no result; the message has its stderr tail.
    """
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_src_root(), env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix="tensorslim-mem-") as tmp:
        npz = Path(tmp) / "inputs.npz"
        # Keys are positional so that any input name survives the npz round trip.
        names = list(inputs)
        np.savez(npz, *[np.asarray(inputs[n]) for n in names])  # stored as arr_0, arr_1, ...
        (Path(tmp) / "names.json").write_text(json.dumps(names), encoding="utf-8")
        cmd = [
            sys.executable,
            "-m",
            WORKER_MODULE,
            "--model",
            str(model_path),
            "--inputs",
            str(npz),
            "--threads",
            str(threads),
            "--runs",
            str(runs),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"memory worker for {model_path} timed out after {timeout_s:.0f} s") from None
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER) :])
    if proc.returncode != 0 or result is None:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"memory worker for {model_path} failed (exit {proc.returncode}): {tail}")
    log.debug("memory worker %s: %s", model_path, result)
    return MemoryStats(
        baseline_rss_bytes=int(result["baseline_rss_bytes"]),
        peak_rss_session_bytes=int(result["peak_rss_session_bytes"]),
        peak_rss_inference_bytes=int(result["peak_rss_inference_bytes"]),
        source=str(result["source"]),
        cold_load_ms=None if result.get("cold_load_ms") is None else float(result["cold_load_ms"]),
    )
