"""The thread budget: sessions whose caller leaves the thread count open follow ``$TENSORSLIM_THREADS``."""

from __future__ import annotations

import pytest

from tensorslim.errors import InputError
from tensorslim.runtime.ort import THREADS_ENV, session_options, thread_budget


def test_budget_sets_sessions_without_an_explicit_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "1")
    assert thread_budget() == 1
    assert session_options(0).intra_op_num_threads == 1
    assert session_options(3).intra_op_num_threads == 3  # an explicit count wins


def test_no_budget_leaves_onnxruntime_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert thread_budget() == 0
    assert session_options(0).intra_op_num_threads == 0


@pytest.mark.parametrize("bad", ["two", "-1", "1.5"])
def test_bad_budget_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(THREADS_ENV, bad)
    with pytest.raises(InputError, match=f"{THREADS_ENV}=.*non-negative integer"):
        thread_budget()


def test_search_workers_run_single_threaded_sessions() -> None:
    from tensorslim.search.worker import SINGLE_THREAD_ENV

    assert SINGLE_THREAD_ENV[THREADS_ENV] == "1"
