"""Older ONNX Runtime releases in their own cached virtual environments, run in a subprocess.

``ort_python("1.17.3")`` creates ``~/.cache/tensorslim-compat/ort-1.17.3`` once (``python -m venv`` + ``pip install
onnxruntime==1.17.3 numpy<2``; ``TENSORSLIM_COMPAT_CACHE`` moves the cache) and returns its interpreter; when pip
cannot serve the release the calling test is skipped with pip's reason. ``run_old`` runs one model there.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

CACHE = Path(os.environ.get("TENSORSLIM_COMPAT_CACHE", Path.home() / ".cache" / "tensorslim-compat"))
#: The releases checked, oldest first: 1.17 (the oldest with MatMulNBits, opset 20), 1.20, 1.24.
RELEASES = ("1.17.3", "1.20.1", "1.24.3")

_RUNNER = r"""
import json, sys
import numpy as np
import onnxruntime as ort
so = ort.SessionOptions()
so.log_severity_level = 4
try:
    sess = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
except Exception as e:
    print(json.dumps({"error": "load: " + str(e).strip().splitlines()[0][:400]}))
    sys.exit(0)
feeds = dict(np.load(sys.argv[2]))
try:
    outs = sess.run(None, feeds)
except Exception as e:
    print(json.dumps({"error": "run: " + str(e).strip().splitlines()[0][:400]}))
    sys.exit(0)
np.savez(sys.argv[3], *[np.asarray(o) for o in outs])
print(json.dumps({"version": ort.__version__}))
"""


_LITERT_RUNNER = r"""
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
try:
    it = Interpreter(model_path=sys.argv[1])
    it.allocate_tensors()
except Exception as e:
    print(json.dumps({"error": "load: " + str(e).strip().splitlines()[0][:400]}))
    sys.exit(0)
feeds = dict(np.load(sys.argv[2]))
try:
    for d in it.get_input_details():
        x = feeds[d["name"]]
        if list(d["shape"]) != list(x.shape):
            it.resize_tensor_input(d["index"], list(x.shape))
            it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], feeds[d["name"]].astype(d["dtype"]))
    it.invoke()
    outs = [it.get_tensor(d["index"]) for d in it.get_output_details()]
except Exception as e:
    print(json.dumps({"error": "run: " + str(e).strip().splitlines()[0][:400]}))
    sys.exit(0)
np.savez(sys.argv[3], *outs)
print(json.dumps({"version": "litert"}))
"""


def ort_python(version: str) -> Path:
    """The interpreter of a virtual environment holding ``onnxruntime==version`` (created on first use)."""
    return runtime_python("onnxruntime", version)


def runtime_python(package: str, version: str) -> Path:
    """The interpreter of a virtual environment holding ``package==version`` (``onnxruntime`` or
    ``ai-edge-litert``), created on first use."""
    env = CACHE / f"{'ort' if package == 'onnxruntime' else 'litert'}-{version}"
    python = env / "bin" / "python"
    ready = env / ".tensorslim-ready"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one creator at a time (parallel test runs share the cache)
        if ready.is_file() and python.exists():
            return python
        base = getattr(sys, "_base_executable", sys.executable)
        steps = [
            [base, "-m", "venv", "--clear", str(env)],
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--retries", "1", "--timeout", "60",
             f"{package}=={version}",
             "numpy<2"],
        ]  # fmt: skip
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if r.returncode:
                last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
                pytest.skip(f"{package}=={version} cannot be installed here ({cmd[2]} failed: {last[0][:200]})")
        ready.write_text(version)
    return python


def run_old(python: Path, model: Path, feeds: Mapping[str, np.ndarray], tmp: Path) -> list[np.ndarray] | str:
    """Outputs of ``model`` on ``feeds`` in the release behind ``python``, or the error text when it fails."""
    feeds_file, outs_file = tmp / "feeds.npz", tmp / f"outs-{python.parent.parent.name}.npz"
    np.savez(feeds_file, **{k: np.asarray(v) for k, v in feeds.items()})
    runner = _LITERT_RUNNER if model.suffix == ".tflite" else _RUNNER
    r = subprocess.run([str(python), "-c", runner, str(model), str(feeds_file), str(outs_file)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    if r.returncode:
        return f"exit {r.returncode}: {r.stderr.strip().splitlines()[-1:] or ''}"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if "error" in res:
        return str(res["error"])
    with np.load(outs_file) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def run_current(model: Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, dict(feeds))]
