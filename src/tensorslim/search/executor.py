"""Run candidate evaluations in parallel: a local process pool (default) or Ray tasks on a Ray cluster.

Both take a batch of :class:`~tensorslim.search.worker.Task` and return their
:class:`~tensorslim.search.worker.Outcome` in the batch's order, whatever order they finished in.

* :class:`PoolExecutor`: ``ProcessPoolExecutor`` with the ``spawn`` start method, ``workers`` single-threaded
  processes, the payload sent once per process through the initializer. A worker that dies mid-candidate
  (``BrokenProcessPool``) gets the pool rebuilt; each candidate of the broken batch is retried once, alone,
  and recorded as failed if its process dies again.
* :class:`RayExecutor`: ``ray.init(address=...)`` (or the Ray instance this process already started), the
  payload ``ray.put`` once, each candidate a remote task that takes the payload's object reference; Ray retries
  a task whose worker died once (``max_retries=1``), then it is recorded as failed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Protocol

from tensorslim.errors import InputError
from tensorslim.search.worker import (
    SINGLE_THREAD_ENV,
    Outcome,
    Payload,
    Task,
    evaluate_task,
    init_worker,
    pool_evaluate,
)

__all__ = ["Executor", "PoolExecutor", "RayExecutor", "make_executor"]

log = logging.getLogger(__name__)

DIED = "the worker process died while evaluating this candidate (retried once)"


class Executor(Protocol):
    """Evaluates batches of candidates."""

    workers: int

    def map(self, tasks: Sequence[Task]) -> list[Outcome]:
        """Outcomes of ``tasks``, in order."""
        ...

    def close(self) -> None:
        """Release the workers."""
        ...


@contextmanager
def _single_thread_env() -> Iterator[None]:
    """Spawned children inherit the environment at start: single-threaded BLAS in every worker."""
    old = {k: os.environ.get(k) for k in SINGLE_THREAD_ENV}
    os.environ.update(SINGLE_THREAD_ENV)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _die_with_parent(parent: int, pdeathsig: bool) -> None:
    """Make this worker exit when its parent does (kill -9 of ``optimize`` must not leave workers running).

    Linux: the kernel sends SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``; only when the pool was
    made by the parent's main thread, since the signal follows the creating thread). Everywhere: a daemon
    thread polls the parent pid twice a second and exits when the worker has been re-parented.
    """
    import threading
    import time

    if pdeathsig and sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the watchdog below still runs
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="tensorslim-parent-watch", daemon=True).start()


def _init(parent: int, pdeathsig: bool, payload: Payload) -> None:
    _die_with_parent(parent, pdeathsig)
    init_worker(payload)


class PoolExecutor:
    """A local pool of ``workers`` spawned processes."""

    def __init__(self, payload: Payload, workers: int) -> None:
        self.payload = payload
        self.workers = workers
        self.retries = 0
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        with _single_thread_env():
            pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init,
                initargs=(os.getpid(), threading.current_thread() is threading.main_thread(), self.payload),
            )
            # start the processes now, while the single-thread environment is set
            for f in [pool.submit(os.getpid) for _ in range(workers)]:
                f.result()
        return pool

    def _get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = self._new_pool(self.workers)
        return self._pool

    def _reset(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def map(self, tasks: Sequence[Task]) -> list[Outcome]:
        """Outcomes of ``tasks`` in order; a dead worker's candidates are retried once each, alone."""
        futures = [self._get().submit(pool_evaluate, t) for t in tasks]
        results: list[Outcome | None] = []
        broken: list[int] = []
        for i, f in enumerate(futures):
            try:
                results.append(f.result())
            except BrokenProcessPool:
                results.append(None)
                broken.append(i)
        if broken:
            log.warning("a worker died; retrying %d candidate(s) once", len(broken))
            self._reset()
            for i in broken:
                self.retries += 1
                try:
                    results[i] = self._get().submit(pool_evaluate, tasks[i]).result()
                except BrokenProcessPool:
                    self._reset()
                    results[i] = Outcome(error=DIED)
        return [r if r is not None else Outcome(error=DIED) for r in results]

    def close(self) -> None:
        """Shut the pool down."""
        self._reset()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'tensorslim[ray]'") from None
    return ray


def _ray_task(payload: Payload, task: Task) -> Outcome:
    init_worker(payload)
    return evaluate_task(payload, task)


class RayExecutor:
    """Remote tasks on a Ray cluster; the payload goes through the object store once."""

    def __init__(self, payload: Payload, address: str, workers: int) -> None:
        ray = _import_ray()
        self._ray = ray
        self.workers = workers
        self.retries = 0
        if not ray.is_initialized():
            try:
                ray.init(address=None if address == "local" else address, include_dashboard=False,
                         log_to_driver=False)  # fmt: skip
            except ConnectionError as e:
                raise InputError(
                    f"--ray {address}: no Ray cluster to connect to ({e}); start one with `ray start --head` "
                    "or give its address"
                ) from None
        self._payload_ref = ray.put(payload)
        self._remote = ray.remote(num_cpus=1, max_retries=1)(_ray_task)

    def map(self, tasks: Sequence[Task]) -> list[Outcome]:
        """Outcomes of ``tasks`` in order; a task whose worker died twice is recorded as failed."""
        refs = [self._remote.remote(self._payload_ref, t) for t in tasks]
        out = []
        for r in refs:
            try:
                out.append(self._ray.get(r))
            except (self._ray.exceptions.WorkerCrashedError, self._ray.exceptions.RayTaskError) as e:
                out.append(Outcome(error=f"{DIED}: {type(e).__name__}"))
        return out

    def close(self) -> None:
        """Drop the payload reference (the Ray instance stays up: it was started or joined by the caller)."""
        self._payload_ref = None


def make_executor(payload: Payload, *, workers: int, ray: str | None) -> PoolExecutor | RayExecutor:
    """The executor the options ask for.

    Raises:
        InputError: ``workers < 1``, or Ray requested but missing or unreachable.
    """
    if workers < 1:
        raise InputError(f"--workers {workers}: give at least 1")
    if ray:
        return RayExecutor(payload, ray, workers)
    return PoolExecutor(payload, workers)
