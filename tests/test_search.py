"""The accuracy-aware search: space, cache, resume, failures, the CLI's budget exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import mlp_model, run
from tensorslim.errors import InputError
from tensorslim.recipe import dump_recipe, load_recipe, recipe_from_dict
from tensorslim.search import SearchConfig, SearchSpace, pareto_indices, recipe_from_params, run_search


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("search")
    model, _ = mlp_model(hidden=128)
    onnx.save(model, d / "m.onnx")
    r = np.random.default_rng(0)
    for name, n in (("calib", 32), ("val", 64), ("test", 64)):
        x = r.standard_normal((n, 32)).astype(np.float32)
        np.savez(d / f"{name}.npz", x=x, label=run(model, {"x": x})[0].argmax(1))
    return {"model": d / "m.onnx", "calib": d / "calib.npz", "val": d / "val.npz", "test": d / "test.npz"}


def _cfg(**kw: object) -> SearchConfig:
    base: dict[str, object] = {"budget": 4, "workers": 1, "builtins": False, "latency_runs": 0, "fallback_layers": 2}
    base.update(kw)
    return SearchConfig(**base)  # type: ignore[arg-type]


def _search(task: dict[str, Path], out: Path, **kw: object):  # type: ignore[no-untyped-def]
    return run_search(task["model"], out, data=task["calib"], eval_data=task["val"], test_data=task["test"],
                      config=_cfg(**kw), progress=False)  # fmt: skip


def test_every_sampled_candidate_is_a_valid_recipe() -> None:
    space = SearchSpace(has_data=True, op_types=frozenset({"Conv", "MatMul"}), sensitive=("a.b", "c[1]", "d", "e"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), directions=["maximize", "minimize"])
    kinds = set()
    for _ in range(60):
        t = study.ask()
        r = space.suggest(t)
        assert recipe_from_dict(r.to_dict()) == r
        assert load_recipe(dump_recipe(r)) == r
        kinds.update(p.kind for p in r.passes)
        study.tell(t, [0.0, 1.0])
    assert {"prune", "channel_prune", "dynamic_quant", "static_quant", "float16", "cluster", "blockwise_quant",
            "pack"} <= kinds  # fmt: skip
    r = recipe_from_params({"pre": "none", "quant": "static", "calibration": "minmax", "fallback_k": 2,
                            "fallback": "int16", "pack": False}, ("a.b", "c[1]"))  # fmt: skip
    assert [rule.name for rule in r.passes[0].rules] == [r"^a\.b$", r"^c\[1\]$"]
    assert all(rule.config == {"activation_bits": 16} for rule in r.passes[0].rules)


def test_stage_choices_come_from_the_registry_in_their_order() -> None:
    from tensorslim.registry import PASSES, search_kind

    full = SearchSpace(has_data=True, op_types=frozenset({"Conv", "MatMul"}))
    assert full._pre_choices() == ["none", "prune", "channel_prune"]
    assert full._quant_choices() == ["none", "dynamic", "static", "fp16", "cluster", "blockwise"]
    bare = SearchSpace(has_data=False, op_types=frozenset({"Relu"}))
    assert bare._pre_choices() == ["none", "prune"] and bare._quant_choices() == ["none", "dynamic", "fp16", "cluster"]
    for e in PASSES:
        if e.search is not None:
            assert search_kind(e.search.stage, e.search.name) == e.kind


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=12))
def test_pareto_front_is_exactly_the_non_dominated_set(points: list[tuple[int, int]]) -> None:
    vals = [[float(a), float(b)] for a, b in points]  # first maximized, second minimized
    front = set(pareto_indices(vals))

    def dominates(p: list[float], q: list[float]) -> bool:
        return p[0] >= q[0] and p[1] <= q[1] and (p[0] > q[0] or p[1] < q[1])

    for i, v in enumerate(vals):
        assert (i in front) == (not any(dominates(w, v) for w in vals))


def test_search_chooses_within_budget_and_cache_skips_repeats(task: dict[str, Path], tmp_path: Path) -> None:
    first = _search(task, tmp_path / "out")
    trials = [c for c in first.candidates if c.source == "trial"]
    assert len(trials) == 4 and first.trials == 4
    assert first.evaluated == len({c.recipe_hash for c in trials})
    assert first.chosen is not None and first.chosen.feasible and first.chosen.score >= first.threshold
    assert first.chosen_path is not None and first.chosen_path.is_file()
    assert first.chosen_path.stat().st_size == first.chosen.size_bytes
    assert (tmp_path / "out" / "best.yaml").is_file() and first.test is not None
    feasible = [c for c in first.candidates if c.feasible]
    assert first.chosen.size_bytes == min(c.size_bytes for c in feasible)
    assert any(c.pareto for c in first.candidates)
    from tensorslim.report import write_report

    page = write_report(tmp_path / "r.html", search=first).read_text()
    front = {(c.size_bytes, c.score) for c in first.candidates if c.pareto}
    assert "Search candidates" in page and first.chosen.name in page
    assert 'class="front"' in page or len(front) < 2  # the front's line needs two distinct points
    second = _search(task, tmp_path / "out")  # same folder, fresh study: every candidate comes from the cache
    assert second.evaluated == 0 and second.cache_hits == 4
    assert [(c.recipe_hash, c.score, c.size_bytes) for c in second.candidates] == [
        (c.recipe_hash, c.score, c.size_bytes) for c in first.candidates
    ]


def test_resume_after_interruption_completes_the_budget(task: dict[str, Path], tmp_path: Path) -> None:
    seen: list[int] = []

    def stop_after_two(c: object) -> None:
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(task["model"], tmp_path / "out", data=task["calib"], eval_data=task["val"],
                   config=_cfg(budget=5), on_trial=stop_after_two, progress=False)  # fmt: skip
    res = run_search(task["model"], tmp_path / "out", data=task["calib"], eval_data=task["val"],
                     config=_cfg(budget=5, resume=True), progress=False)  # fmt: skip
    trials = [c for c in res.candidates if c.source == "trial"]
    assert res.trials == 5 and len(trials) == 5
    assert sorted(c.trial for c in trials) == sorted({c.trial for c in trials})
    assert res.evaluated <= 3  # the two finished before the interruption are not evaluated again


def test_metric_function_that_raises_is_a_clear_input_error(task: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (tmp_path / "raising_metric.py").write_text("def score(outputs, batch):\n    return 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InputError, match="metric function raising_metric:score raised ZeroDivisionError"):
        _search(task, tmp_path / "out", metric="python:raising_metric:score")


DYING_METRIC = """
import multiprocessing, os
import numpy as np

def score(outputs, batch):
    path = os.environ["TS_DIE_COUNTER"]
    if multiprocessing.parent_process() is not None:  # only in pool workers
        n = int(open(path).read()) if os.path.exists(path) else 0
        open(path, "w").write(str(n + 1))
        if n < 2:  # the first candidate's process dies, and dies again on its retry
            os._exit(7)
    return float(np.mean(outputs[0].argmax(1) == batch["label"]))
"""


def test_dead_worker_is_retried_once_then_recorded_failed(task: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (tmp_path / "dying_metric.py").write_text(DYING_METRIC)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TS_DIE_COUNTER", str(tmp_path / "count.txt"))
    res = _search(task, tmp_path / "out", metric="python:dying_metric:score", budget=3, fallback_layers=0)
    trials = sorted((c for c in res.candidates if c.source == "trial"), key=lambda c: c.trial or 0)
    assert res.retries == 1
    assert "worker process died" in trials[0].error
    assert len(trials) == 3 and all(c.ok for c in trials[1:])
    assert (tmp_path / "count.txt").read_text() == str(2 + len({c.recipe_hash for c in trials[1:]}))


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tensorslim.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)  # fmt: skip


def test_cli_impossible_budget_exits_1(task: dict[str, Path], tmp_path: Path) -> None:
    r = cli("optimize", str(task["model"]), "--data", str(task["calib"]), "--eval-data", str(task["val"]),
            "--metric", "cosine", "--min-score", "1.5", "--budget", "2", "--workers", "1", "--seconds", "0",
            "-o", str(tmp_path / "out"), "--json", str(tmp_path / "o.json"), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "no candidate reached cosine >= 1.5000" in r.stderr and "--max-drop" in r.stderr
    js = json.loads((tmp_path / "o.json").read_text())
    assert js["search"]["chosen"] is None and js["search"]["trials"] == 2


def test_cli_rejects_bad_options(task: dict[str, Path], tmp_path: Path) -> None:
    r = cli("optimize", str(task["model"]), "--max-drop", "-3%", cwd=tmp_path)
    assert r.returncode == 2 and "--max-drop '-3%': must be a non-negative number" in r.stderr
    r = cli("optimize", str(task["model"]), "--objective", "speed", cwd=tmp_path)
    assert r.returncode == 2 and "objective: 'speed' is not one of size, latency, both" in r.stderr


def test_a_resumed_study_does_not_ask_the_first_runs_points_again(tmp_path: Path) -> None:
    from tensorslim.search.study import _open_study

    def first_suggestion(resume: bool) -> float:
        study = _open_study(tmp_path, _cfg(sampler="random", resume=resume), "ctx", ["maximize"])
        t = study.ask()
        x = t.suggest_float("x", 0.0, 1.0)
        study.tell(t, [x])
        return x

    a = first_suggestion(resume=False)
    assert first_suggestion(resume=False) == a  # a fresh study with the same seed asks the same point
    assert first_suggestion(resume=True) != a  # resumed: the sampler is seeded past the stored trials
