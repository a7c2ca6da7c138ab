"""What one worker does with one candidate: apply the recipe, score it, measure its size.

Workers never time anything: a latency taken while another worker computes on the same cores is off by up to
several times. The parent process times candidates with ``tensorslim bench``'s interleaved harness when the
workers are idle (:mod:`tensorslim.search.timing`); a local worker leaves the candidate's file where the task
says (``Task.keep``) so the parent can time it without building it again.

The same function runs in a local process pool (:mod:`tensorslim.search.executor`) and as a Ray task. The
model, the calibration file and the evaluation data travel once per worker as a :class:`Payload` (pool
initializer, or one Ray object-store entry) and are set up once per process; each candidate is then only its
recipe. Workers are single-threaded: ONNX Runtime with one intra-op thread, and the pool sets
``OMP_NUM_THREADS=1`` (and friends) for NumPy's BLAS.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Outcome", "Payload", "Task", "evaluate_task", "init_worker", "pool_evaluate"]

SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "TENSORSLIM_THREADS": "1",  # every ONNX Runtime session tensorslim creates without an explicit thread count
}


@dataclass(frozen=True)
class Payload:
    """Everything a worker needs besides the candidate's recipe (shipped once per worker).

    Attributes:
        key: The measurement setting's hash (a worker sets itself up once per key).
        model_bytes: The float ONNX model.
        calib_bytes: The calibration file's bytes (``.npz`` or ``.npy``: ``calib_suffix``), or ``None``.
        eval_inputs: Evaluation inputs, one array per model input, samples first.
        eval_labels: Labels of the evaluation samples, or ``None``.
        eval_source: Where the evaluation data came from (for messages).
        reference: The float model's outputs on the evaluation data.
        metric: The metric spec (:func:`~tensorslim.evaluate.metrics.resolve_metric`).
        seed: Seed for passes that take one.
        batch_size: Samples per scoring run.
        calib_suffix: The calibration file's suffix.
        calib_folder: A folder of calibration feeds instead of a file: ``(name, bytes)`` of each file.
        eval_batch_axes: The model's batch axis of each evaluation input (:attr:`Dataset.batch_axes`).
        eval_fixed_batch: The samples the model takes per call, when fixed (:attr:`Dataset.fixed_batch`).
    """

    key: str
    model_bytes: bytes
    calib_bytes: bytes | None
    eval_inputs: dict[str, np.ndarray]
    eval_labels: np.ndarray | None
    eval_source: str
    reference: list[np.ndarray]
    metric: str
    seed: int = 0
    batch_size: int = 64
    calib_suffix: str = ".npz"
    calib_folder: tuple[tuple[str, bytes], ...] | None = None
    eval_batch_axes: dict[str, int | None] | None = None
    eval_fixed_batch: int | None = None


@dataclass(frozen=True)
class Task:
    """One candidate: its recipe as plain data, the output suffix (``.onnx`` or ``.tslim``), and where to leave
    the built file for the parent to time (``None``: delete it; a path the worker's machine can write)."""

    recipe: dict[str, Any]
    suffix: str = ".onnx"
    keep: str | None = None


@dataclass
class Outcome:
    """The measurements of one candidate (``error`` set when it failed).

    ``changed`` is ``False`` when no pass of the recipe changed the model (a technique that does not apply to it);
    ``cosine`` and ``sqnr_db`` compare the candidate's outputs with the float model's on the evaluation data.
    """

    score: float | None = None
    size_bytes: int | None = None
    changed: bool | None = None
    cosine: float | None = None
    sqnr_db: float | None = None
    apply_s: float = 0.0
    eval_s: float = 0.0
    error: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Outcome:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class _State:
    key: str
    folder: Path
    model: Path
    calib: Path | None
    dataset: Any
    count: int = 0


_STATE: dict[str, Any] = {"payload": None, "state": None}


def init_worker(payload: Payload) -> None:
    """Process-pool initializer: keep the payload for the tasks of this process."""
    for k, v in SINGLE_THREAD_ENV.items():
        os.environ.setdefault(k, v)
    _STATE["payload"] = payload


def pool_evaluate(task: Task) -> Outcome:
    """Evaluate ``task`` with the payload given to :func:`init_worker`."""
    payload = _STATE["payload"]
    if payload is None:  # pragma: no cover - a wiring bug
        raise RuntimeError("worker not initialized")
    return evaluate_task(payload, task)


def _state(payload: Payload) -> _State:
    st: _State | None = _STATE["state"]
    if st is not None and st.key == payload.key:
        return st
    from tensorslim.evaluate.data import Dataset

    folder = Path(tempfile.mkdtemp(prefix="tensorslim-search-"))
    model = folder / "model.onnx"
    model.write_bytes(payload.model_bytes)
    calib = None
    if payload.calib_bytes is not None:
        calib = folder / f"calib{payload.calib_suffix}"
        calib.write_bytes(payload.calib_bytes)
    elif payload.calib_folder is not None:
        calib = folder / "calib"
        calib.mkdir()
        for name, data in payload.calib_folder:
            (calib / Path(name).name).write_bytes(data)
    ds = Dataset(dict(payload.eval_inputs), payload.eval_labels, source=payload.eval_source,
                 batch_axes=dict(payload.eval_batch_axes or {}), fixed_batch=payload.eval_fixed_batch)  # fmt: skip
    st = _State(payload.key, folder, model, calib, ds)
    _STATE["state"] = st
    return st


def _times_itself(kind: Any) -> bool:
    """Whether pass ``kind``'s config has a ``latency_check`` (a timed check of its own, static quantization's)."""
    import dataclasses

    from tensorslim.registry import pass_entry

    entry = pass_entry(kind) if isinstance(kind, str) else None
    return entry is not None and any(f.name == "latency_check" for f in dataclasses.fields(entry.config_class()))


def without_latency_check(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe with static quantization's own latency check off: the search times candidates itself, and a
    check timed inside a worker would compete with the other workers for the cores."""
    out = dict(recipe)
    passes = []
    for p in recipe.get("passes", []) or []:
        if isinstance(p, dict) and _times_itself(p.get("pass")):
            p = {**p, "config": {**(p.get("config") or {}), "latency_check": False}}
        passes.append(p)
    if passes:
        out["passes"] = passes
    return out


def evaluate_task(payload: Payload, task: Task) -> Outcome:
    """Apply ``task``'s recipe to the payload's model, then measure score, fidelity and size on disk.

    A candidate that cannot be built or scored comes back with ``error`` set (the search goes on); only a
    crash of the process itself escapes (the executor retries it once).
    """
    from tensorslim.errors import InputError
    from tensorslim.evaluate.compare import run_dataset
    from tensorslim.evaluate.metrics import resolve_metric
    from tensorslim.recipe import apply_recipe, recipe_from_dict
    from tensorslim.runtime.base import open_runtime

    st = _state(payload)
    st.count += 1
    out = st.folder / f"candidate-{os.getpid()}-{st.count}{task.suffix}"
    res = Outcome()
    t0 = time.perf_counter()
    try:
        recipe = recipe_from_dict(without_latency_check(task.recipe))
        applied = apply_recipe(recipe, st.model, out, data=st.calib, seed=payload.seed, progress=False)
        res.notes = list(applied.notes)[:5]
        res.changed = any(s.modified for s in applied.steps)  # pack counts: it re-encodes the weights
        res.apply_s = time.perf_counter() - t0
        res.size_bytes = out.stat().st_size
        t1 = time.perf_counter()
        rt = open_runtime(out, threads=1)
        outputs = run_dataset(rt, st.dataset, payload.batch_size)
        metric = resolve_metric(payload.metric, batch_size=payload.batch_size)
        res.score = float(metric.score(outputs, st.dataset, payload.reference))
        res.cosine, res.sqnr_db = _fidelity(outputs, st.dataset, payload.reference)
        res.eval_s = time.perf_counter() - t1
        if task.keep is not None:
            Path(task.keep).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(out, task.keep)
    except InputError as e:
        res.error = str(e)
    except Exception as e:  # a pass bug must not end the search; the candidate is recorded as failed
        res.error = f"internal error: {type(e).__name__}: {e}"
    finally:
        out.unlink(missing_ok=True)
    return res


def _fidelity(outputs: list[np.ndarray], dataset: Any, reference: list[np.ndarray]) -> tuple[float | None, ...]:
    """Mean cosine and SQNR (dB) against the float outputs, ``None`` where the outputs have no float tensor."""
    from tensorslim.errors import InputError
    from tensorslim.evaluate.metrics import resolve_metric

    vals: list[float | None] = []
    for name in ("cosine", "sqnr"):
        try:
            vals.append(float(resolve_metric(name).score(outputs, dataset, reference)))
        except InputError:
            vals.append(None)
    return tuple(vals)
