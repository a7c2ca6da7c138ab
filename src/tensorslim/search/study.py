"""The accuracy-aware search: an Optuna multi-objective study over recipes, evaluated in parallel.

Flow (``run_search``)::

    float model + eval data -> reference outputs, float score, threshold = score - max_drop
    -> sensitivity ranking (once) -> search space
    -> built-in recipes evaluated (the comparison the result is judged against)
    -> Optuna study (seeded TPE or NSGA-II; objectives: metric max, size and/or latency min; the budget as
       a trial constraint, ``Trial.set_constraint``), asked in batches of ``workers`` trials and told in
       trial order, so the result does not
       depend on which worker finished first; stored in ``<output>/study.journal`` (``resume=True`` goes on)
    -> every candidate looked up in the content-hash cache (``<output>/cache``) before it is evaluated
    -> workers only build and score; latency is taken in this process with ``tensorslim bench``'s interleaved
       harness against the float model while the workers are idle (:mod:`tensorslim.search.timing`): after
       each batch when the objective needs latency, and again for the finalists (built-in recipes, Pareto
       front, chosen model) once the accuracy work is done
    -> Pareto front of everything tried, the chosen model (smallest / fastest / best size x latency that meets
       the budget), re-applied to ``<output>/best.onnx|.tslim`` and re-measured on the test data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tensorslim._files import write_text_atomic
from tensorslim.errors import ConfigError, InputError
from tensorslim.recipe import Recipe, dump_recipe, recipe_from_dict
from tensorslim.search.cache import ResultCache, candidate_key, file_sha256, passes_hash
from tensorslim.search.timing import Timing, TimingSettings, conditions_match, time_against_float
from tensorslim.search.worker import Outcome, Payload, Task

__all__ = ["Candidate", "SearchConfig", "SearchResult", "pareto_indices", "run_search", "write_summary"]

log = logging.getLogger(__name__)

OBJECTIVES = ("size", "latency", "both")
SAMPLERS = ("tpe", "nsga2", "random")
STUDY_NAME = "tensorslim-search"


@dataclass(frozen=True)
class SearchConfig:
    """Options of the search (validated).

    Attributes:
        metric: ``top1``, ``cosine``, ``sqnr``, ``embedding-cosine``, ``python:module:function``, or ``auto``
            (``top1`` when the evaluation data has labels, else ``cosine``).
        max_drop: Allowed drop from the float model's score, in the metric's unit (0.01: one top-1 point).
        min_score: Or an absolute floor (the stricter of the two applies).
        objective: What to minimize besides keeping the score: ``size``, ``latency`` or ``both``.
        budget: Number of search trials (the built-in recipes come on top).
        workers: Candidates evaluated at once (processes, or Ray tasks).
        ray: ``None`` for the local pool; ``auto`` or an address to run on a Ray cluster.
        seed: Seeds the sampler and the passes.
        resume: Continue the study stored in the output folder.
        sampler: ``tpe``, ``nsga2``, or ``random`` (seeded; the trials do not depend on the results, so any
            number of workers tries the same candidates).
        builtins: Evaluate the built-in recipes too.
        latency_runs: At least this many timed runs per model when candidates are timed (0: no latency).
        timing: How the parent times candidates (threads, batch, seconds per model, memory, group size).
        fallback_layers: Most sensitive layers offered as per-layer float/int16 fallbacks (0: none).
        max_eval_samples: Use at most this many evaluation samples.
    """

    metric: str = "auto"
    max_drop: float | None = 0.01
    min_score: float | None = None
    objective: str = "size"
    budget: int = 40
    workers: int = 1
    ray: str | None = None
    seed: int = 0
    resume: bool = False
    sampler: str = "tpe"
    builtins: bool = True
    latency_runs: int = 20
    timing: TimingSettings = field(default_factory=TimingSettings)
    fallback_layers: int = 4
    max_eval_samples: int | None = None

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective: {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler: {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if self.budget < 0:
            raise ConfigError(f"budget: {self.budget} must be >= 0 (number of search trials)")
        if self.workers < 1:
            raise ConfigError(f"workers: {self.workers} must be >= 1")
        if self.max_drop is not None and self.max_drop < 0:
            raise ConfigError(f"max_drop: {self.max_drop} must be >= 0")
        if self.max_drop is None and self.min_score is None:
            raise ConfigError("max_drop: give max_drop or min_score (the accuracy budget)")
        if self.fallback_layers < 0:
            raise ConfigError(f"fallback_layers: {self.fallback_layers} must be >= 0")
        if self.max_eval_samples is not None and self.max_eval_samples < 1:
            raise ConfigError(f"max_eval_samples: {self.max_eval_samples} must be >= 1")
        if self.latency_runs < 0:
            raise ConfigError(f"latency_runs: {self.latency_runs} must be >= 0")
        if self.objective != "size" and self.latency_runs == 0:
            raise ConfigError(f"latency_runs: 0 cannot serve objective {self.objective!r}; give at least 5")


@dataclass
class Candidate:
    """One model the search tried (a built-in recipe or a trial)."""

    name: str
    source: str  # "builtin" or "trial"
    trial: int | None
    recipe: dict[str, Any]
    recipe_hash: str
    score: float | None = None
    size_bytes: int | None = None
    latency_ms: float | None = None
    error: str = ""
    cached: bool = False
    feasible: bool = False
    pareto: bool = False
    latency_ci: tuple[float, float] | None = None
    latency_ratio: float | None = None
    latency_ratio_ci: tuple[float, float] | None = None
    session_bytes: int | None = None
    timing: dict[str, Any] | None = None  # the conditions the latency was taken under
    changed: bool | None = None
    cosine: float | None = None
    sqnr_db: float | None = None
    file: str | None = None  # the built file that was timed (kept for the finalists in <output>/candidates)

    def set_timing(self, t: Timing) -> None:
        """Take latency, its intervals, session memory and the conditions from ``t``."""
        self.latency_ms, self.latency_ci = t.p50_ms, t.p50_ci
        self.latency_ratio, self.latency_ratio_ci = t.ratio, t.ratio_ci
        self.session_bytes, self.timing = t.session_bytes, dict(t.conditions)

    @property
    def ok(self) -> bool:
        """Measured without error."""
        return not self.error and self.score is not None and self.size_bytes is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class SearchResult:
    """What the search found."""

    model: Path
    output_dir: Path
    metric: str
    objective: str
    reference_score: float
    threshold: float
    float_size_bytes: int
    float_latency_ms: float | None
    float_timing: dict[str, Any] | None = None
    busy: str = ""  # how busy the machine was while timing (tensorslim bench's wording), "" when quiet
    candidates: list[Candidate] = field(default_factory=list)
    chosen: Candidate | None = None
    chosen_path: Path | None = None
    test: dict[str, Any] | None = None
    evaluated: int = 0
    cache_hits: int = 0
    retries: int = 0
    trials: int = 0
    notes: list[str] = field(default_factory=list)
    slower_than_float: str = ""  # objective latency: every candidate within the budget timed slower than float

    @property
    def front(self) -> list[Candidate]:
        """The Pareto front of everything tried."""
        return [c for c in self.candidates if c.pareto]

    def beats_builtins(self) -> bool | None:
        """Whether the chosen model is strictly better (by the objective) than every built-in recipe that meets
        the budget; ``None`` without a chosen model."""
        if self.chosen is None:
            return None
        key = _objective_key(self.objective, self.float_size_bytes, self.float_latency_ms)
        rivals = [c for c in self.candidates if c.source == "builtin" and c.feasible]
        return all(key(self.chosen) < key(c) for c in rivals)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (documented in ``docs/json-schema.md``)."""
        return {
            "model": str(self.model),
            "output_dir": str(self.output_dir),
            "metric": self.metric,
            "objective": self.objective,
            "reference_score": self.reference_score,
            "threshold": self.threshold,
            "float_size_bytes": self.float_size_bytes,
            "float_latency_ms": self.float_latency_ms,
            "float_timing": self.float_timing,
            "busy": self.busy,
            "trials": self.trials,
            "evaluated": self.evaluated,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "chosen": None if self.chosen is None else self.chosen.to_dict(),
            "slower_than_float": self.slower_than_float,
            "chosen_path": None if self.chosen_path is None else str(self.chosen_path),
            "beats_builtins": self.beats_builtins(),
            "test": self.test,
            "pareto_front": [c.recipe_hash for c in self.front],
            "candidates": [c.to_dict() for c in self.candidates],
            "notes": self.notes,
        }


def _objective_key(objective: str, size0: float, lat0: float | None) -> Callable[[Candidate], tuple[float, ...]]:
    """Sort key of the choice; latency is the ratio to the float model timed in the same interleaved run."""

    def key(c: Candidate) -> tuple[float, ...]:
        size = float(c.size_bytes or np.inf)
        lat = float(c.latency_ratio) if c.latency_ratio is not None else np.inf
        score = -float(c.score if c.score is not None else -np.inf)
        if objective == "size":
            return (size, score, lat)
        if objective == "latency":
            return (lat, score, size)
        return ((size / size0) * lat, score, size)

    return key


def _objective_values(objective: str, c: Candidate) -> list[float]:
    score = float(c.score) if c.score is not None else float("-inf")
    lat = float(c.latency_ratio) if c.latency_ratio is not None else float("inf")
    if objective == "size":
        return [score, float(c.size_bytes or 0)]
    if objective == "latency":
        return [score, lat]
    return [score, float(c.size_bytes or 0), lat]


def pareto_indices(values: list[list[float]]) -> list[int]:
    """Indices of the non-dominated rows; the first value is maximized, the others minimized."""
    pts = np.array([[-v[0], *v[1:]] for v in values], dtype=np.float64) if values else np.zeros((0, 2))
    out = []
    for i in range(len(pts)):
        dominated = np.any(np.all(pts <= pts[i], axis=1) & np.any(pts < pts[i], axis=1))
        if not dominated:
            out.append(i)
    return out


@dataclass
class _Setup:
    payload: Payload
    dataset: Any
    reference_score: float
    threshold: float
    metric: str
    context: str
    notes: list[str]


def _prepare(model: Path, data: Path | None, eval_data: Path | None, cfg: SearchConfig) -> _Setup:
    from tensorslim.data import generate_runnable, load_npz
    from tensorslim.evaluate.compare import run_dataset
    from tensorslim.evaluate.metrics import resolve_metric
    from tensorslim.runtime.ort import OrtRuntime

    notes: list[str] = []
    rt = OrtRuntime(model, threads=1)
    if eval_data is not None:
        ds = load_npz(eval_data, rt.inputs, max_samples=cfg.max_eval_samples)
    elif data is not None:
        ds = load_npz(data, rt.inputs, max_samples=cfg.max_eval_samples)
        notes.append("no --eval-data: candidates are scored on the calibration data (pass a held-out split)")
    else:
        ds = generate_runnable(rt, num_samples=32, seed=cfg.seed, bounds=rt.index_bounds())
        notes.append("no data: candidates are scored on generated inputs against the float model")
    notes.extend(ds.notes)
    metric_name = cfg.metric
    if metric_name == "auto":
        metric_name = "top1" if ds.labels is not None else "cosine"
    metric = resolve_metric(metric_name)
    reference = run_dataset(rt, ds, metric.batch_size)
    ref_score = metric.score(reference, ds, reference)
    threshold = metric.threshold(ref_score, cfg.max_drop, cfg.min_score)
    # version 2: workers no longer time candidates (timings live beside the entry, with their conditions)
    context = ResultCache.context_key(
        model=file_sha256(model), data=file_sha256(data), eval=file_sha256(eval_data) if eval_data else ds.source,
        n_eval=ds.num_samples, metric=metric_name, seed=cfg.seed, version=2,
    )  # fmt: skip
    calib_file = data is not None and not data.is_dir()
    payload = Payload(
        key=context,
        model_bytes=model.read_bytes(),
        calib_bytes=data.read_bytes() if data is not None and calib_file else None,
        calib_suffix=data.suffix if data is not None and calib_file else ".npz",
        calib_folder=_folder_files(data) if data is not None and not calib_file else None,
        eval_batch_axes=dict(ds.batch_axes),
        eval_fixed_batch=ds.fixed_batch,
        eval_inputs=ds.inputs,
        eval_labels=ds.labels,
        eval_source=ds.source,
        reference=reference,
        metric=metric_name,
        seed=cfg.seed,
        batch_size=metric.batch_size,
    )
    return _Setup(payload, ds, ref_score, threshold, metric_name, context, notes)


def _folder_files(folder: Path) -> tuple[tuple[str, bytes], ...]:
    """A folder of calibration feeds as ``(name, bytes)`` of its ``.npz`` files (what the loader reads), for the
    workers."""
    return tuple((p.name, p.read_bytes()) for p in sorted(folder.glob("*.npz")) if p.is_file())


def _suffix(recipe: Recipe) -> str:
    return ".tslim" if recipe.passes[-1].kind == "pack" else ".onnx"


class _Runner:
    """Evaluates candidates through the cache and the executor, counting what it really ran.

    A local worker leaves each candidate's file in ``files`` (named by its cache key) for the parent to time;
    a Ray worker may run on another machine, so the parent builds the file again when it needs it.
    """

    def __init__(self, setup: _Setup, cache: ResultCache, executor: Any, files: Path) -> None:
        from tensorslim.search.executor import PoolExecutor

        self.setup, self.cache, self.executor, self.files = setup, cache, executor, files
        self.local = isinstance(executor, PoolExecutor)
        self.evaluated = 0
        self.hits = 0

    def key(self, recipe: Recipe) -> str:
        """The cache key of ``recipe``."""
        return candidate_key(self.setup.context, recipe)

    def file_of(self, recipe: Recipe) -> Path:
        """Where the candidate's built file is kept."""
        return self.files / f"{self.key(recipe)[:32]}{_suffix(recipe)}"

    def run(self, recipes: list[Recipe]) -> list[tuple[Outcome, bool]]:
        """Outcome of each recipe (and whether it came from the cache); duplicates are evaluated once."""
        keys = [self.key(r) for r in recipes]
        todo: dict[str, Recipe] = {}
        for k, r in zip(keys, recipes, strict=True):
            if k not in todo and self.cache.get(k) is None:
                todo[k] = r
        if todo:
            tasks = [Task(r.to_dict(), _suffix(r), str(self.file_of(r)) if self.local else None)
                     for r in todo.values()]  # fmt: skip
            outs = self.executor.map(tasks)
            self.evaluated += len(tasks)
            for k, o in zip(todo, outs, strict=True):
                self.cache.put(k, o.to_dict())
        out = []
        for k in keys:
            entry = self.cache.get(k)
            out.append((Outcome.from_dict(entry or {"error": "lost from the cache"}), k not in todo))
            if k not in todo:
                self.hits += 1
        return out


class _Timer:
    """Times candidates in this process (workers idle) against the float model; timings go to the cache too."""

    def __init__(self, src: Path, data: Path | None, cfg: SearchConfig, runner: _Runner,
                 say: Callable[[str], None], dataset: Any) -> None:  # fmt: skip
        from tensorslim.benchmark.sysinfo import env_info

        self.src, self.data, self.cfg, self.runner, self.say = src, data, cfg, runner, say
        self.settings = dataclasses.replace(cfg.timing, min_runs=max(1, cfg.latency_runs))
        # timed on the evaluation data's first batch: its shapes are the task's (generated inputs size 1 what the
        # model leaves open); a model with a fixed batch takes its own batch
        first = next(iter(dataset.batches(self.settings.batch_size)))[0]
        self.inputs = {k: np.ascontiguousarray(v) for k, v in first.items()}
        env = env_info(self.settings.threads)
        self.here = {"threads": self.settings.threads, "batch_size": self.settings.batch_size,
                     "input_shapes": {k: list(v.shape) for k, v in self.inputs.items()},
                     "onnxruntime_version": env.onnxruntime_version, "cpu_model": env.cpu_model}  # fmt: skip
        self.float: Timing | None = None
        self.notes: list[str] = []
        self.busy = ""

    def _file(self, c: Candidate) -> Path:
        from tensorslim.recipe.apply import apply_recipe
        from tensorslim.search.worker import without_latency_check

        path = self.runner.file_of(recipe_from_dict(c.recipe))
        if not path.is_file():  # a cache hit of an earlier run, or a Ray worker's candidate: build it here
            path.parent.mkdir(parents=True, exist_ok=True)
            recipe = recipe_from_dict(without_latency_check(c.recipe))  # as the workers build it
            apply_recipe(recipe, self.src, path, data=self.data, seed=self.cfg.seed, progress=False)
        return path

    def cached(self, c: Candidate) -> bool:
        """Take a stored timing of ``c`` taken under the same conditions on a quiet machine (search steps only)."""
        entry = self.runner.cache.get(self.runner.key(recipe_from_dict(c.recipe))) or {}
        t = entry.get("timing")
        if not t or not conditions_match(t.get("conditions") or {}, self.here):
            return False
        c.set_timing(Timing.from_dict(t))
        return True

    def time(self, cands: list[Candidate], role: str) -> None:
        """Time ``cands`` (each once, by recipe) interleaved with the float model; sets their timing."""
        uniq: dict[str, Candidate] = {}
        for c in cands:
            uniq.setdefault(c.recipe_hash, c)
        todo = list(uniq.values())
        if not todo:
            return
        paths = [self._file(c) for c in todo]
        settings = self.settings if role == "final" else dataclasses.replace(self.settings, memory=False)
        try:
            ref, timings, notes = time_against_float(self.src, paths, settings=settings, role=role, on_step=self.say,
                                                     inputs=self.inputs)  # fmt: skip
        except ValueError as e:  # a model that cannot run on generated inputs: no latency, the search goes on
            self.notes.append(f"latency not measured: {e}")
            return
        if self.float is None or role == "final":
            self.float = ref
        self.busy = self.busy or (notes[0] if notes else "")
        for c, t in zip(todo, timings, strict=True):
            key = self.runner.key(recipe_from_dict(c.recipe))
            entry = self.runner.cache.get(key)
            if entry is not None:
                self.runner.cache.put(key, {**entry, "timing": t.to_dict()})
        by_hash = {c.recipe_hash: (t, str(p)) for c, t, p in zip(todo, timings, paths, strict=True)}
        for c in cands:
            c.set_timing(by_hash[c.recipe_hash][0])
            c.file = by_hash[c.recipe_hash][1]

    def keep_only(self, cands: list[Candidate]) -> None:
        """Delete kept candidate files except those of ``cands`` (the next run's finalists are likely the same)."""
        keep = {self.runner.file_of(recipe_from_dict(c.recipe)).name for c in cands}
        if self.runner.files.is_dir():
            for p in self.runner.files.iterdir():
                if p.name not in keep:
                    p.unlink(missing_ok=True)


def _candidate(name: str, source: str, trial: int | None, recipe: Recipe, o: Outcome, cached: bool,
               threshold: float) -> Candidate:  # fmt: skip
    c = Candidate(name, source, trial, recipe.to_dict(), passes_hash(recipe), o.score, o.size_bytes, None, o.error,
                  cached, changed=o.changed, cosine=o.cosine, sqnr_db=o.sqnr_db)  # fmt: skip
    c.feasible = c.ok and c.score is not None and c.score >= threshold
    return c


def _open_study(out: Path, cfg: SearchConfig, context: str, directions: list[Any]) -> Any:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    journal = out / "study.journal"
    if journal.exists() and not cfg.resume:
        journal.unlink()
    storage = JournalStorage(JournalFileBackend(str(journal)))

    def make_sampler(seed: int) -> Any:
        if cfg.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if cfg.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, cfg.budget // 2 or 4)))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, cfg.budget // 3)))

    study = optuna.create_study(
        study_name=STUDY_NAME, storage=storage, sampler=make_sampler(cfg.seed), directions=directions,
        load_if_exists=True,
    )  # fmt: skip
    stored = len(study.get_trials(deepcopy=False))
    if stored:  # resumed: a sampler seeded as in the first run would ask that run's first points again
        study.sampler = make_sampler(cfg.seed + stored)
    settings = {"context": context, "objective": cfg.objective, "sampler": cfg.sampler}
    old = study.user_attrs.get("settings")
    if old is None:
        study.set_user_attr("settings", settings)
    elif old != settings:
        raise InputError(
            f"{journal}: the stored study was run with other settings (model, data, metric, objective or sampler); "
            "drop --resume to start afresh, or use another --output-dir"
        )
    return study


def _finished(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.FAIL) and not t.user_attrs.get("interrupted")]  # fmt: skip


def _requeue_interrupted(study: Any) -> int:
    """Trials asked but never told (an interrupted run) are closed as failed and their parameters asked again."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in stale:
        if t.state == TrialState.RUNNING:
            study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            study.tell(t.number, state=TrialState.FAIL)
            study.enqueue_trial(t.params, skip_if_exists=False)
    return len(stale)


def run_search(
    model: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    test_data: str | os.PathLike[str] | None = None,
    config: SearchConfig | None = None,
    progress: bool | None = None,
    on_trial: Callable[[Candidate], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> SearchResult:
    """Search recipes for ``model`` that keep the metric within budget and minimize size and/or latency.

    Args:
        model: The float ONNX model (never modified).
        output_dir: Folder for the study journal, the cache, ``best.*`` and ``best.yaml``.
        data: Calibration ``.npz`` given to the passes (static quantization, data-aware pruning).
        eval_data: ``.npz`` the candidates are scored on (selection).
        test_data: Held-out ``.npz``: the chosen model's drop is measured again on it.
        config: Search options.
        progress: Draw a progress bar over trials (default: when stderr is a terminal).
        on_trial: Called with each finished search trial's candidate (after it is told to the study).
        on_step: Called with one plain line per step (each candidate scored, each timing run), for logs and
            pipes where no bar is drawn.

    Returns:
        The :class:`SearchResult`; ``chosen`` is ``None`` when no candidate met the budget.

    Raises:
        InputError: unreadable model or data, a metric that cannot be computed, bad options, Ray missing.
    """
    from optuna.trial import TrialState

    from tensorslim.backends.onnx.io import load_model
    from tensorslim.progress import progress_bar
    from tensorslim.recipe import builtin_recipes
    from tensorslim.recipe.apply import needs_data
    from tensorslim.search.executor import make_executor
    from tensorslim.search.sensitivity import rank_sensitive_layers
    from tensorslim.search.space import SearchSpace

    cfg = config or SearchConfig()
    src = Path(model)
    proto = load_model(src)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another --output-dir")
    out.mkdir(parents=True, exist_ok=True)
    data_p = Path(data) if data is not None else None
    eval_p = Path(eval_data) if eval_data is not None else None
    setup = _prepare(src, data_p, eval_p, cfg)
    res = SearchResult(src, out, setup.metric, cfg.objective, setup.reference_score, setup.threshold,
                       src.stat().st_size, None, notes=list(setup.notes))  # fmt: skip
    say = on_step or (lambda _line: None)
    say(f"float model: {setup.metric} {setup.reference_score:.4f} on {setup.dataset.num_samples} selection samples "
        f"({setup.dataset.source or 'generated'}); budget: >= {setup.threshold:.4f}")  # fmt: skip
    sensitive: tuple[str, ...] = ()
    if cfg.fallback_layers > 0:
        sensitive, note = rank_sensitive_layers(
            src, calib=data_p, eval_data=eval_p, top=cfg.fallback_layers,
            cache_file=out / "cache" / f"sensitivity-{setup.context[:16]}.json", seed=cfg.seed,
        )  # fmt: skip
        res.notes.append(note)
    space = SearchSpace(has_data=data_p is not None, op_types=frozenset(n.op_type for n in proto.graph.node),
                        sensitive=sensitive)  # fmt: skip
    builtins: list[Recipe] = []
    if cfg.builtins:
        reg = builtin_recipes()
        for name in reg.names():
            r = reg.get(name)
            if data_p is None and any(needs_data(s) for s in r.passes):
                res.notes.append(f"built-in recipe {name} skipped: it needs calibration data (--data)")
                continue
            builtins.append(r)
    directions: list[Any] = ["maximize", "minimize"] + (["minimize"] if cfg.objective == "both" else [])
    study = _open_study(out, cfg, setup.context, directions)
    stale = _requeue_interrupted(study)
    if stale:
        res.notes.append(f"resumed: {stale} interrupted trial(s) asked again")
    executor = make_executor(setup.payload, workers=cfg.workers, ray=cfg.ray)
    runner = _Runner(setup, ResultCache(out / "cache"), executor, out / "candidates")
    timer = _Timer(src, data_p, cfg, runner, say, setup.dataset) if cfg.latency_runs > 0 else None
    done = len(_finished(study))
    total = len(builtins) + cfg.budget
    step = [0]

    def report(c: Candidate) -> None:
        step[0] += 1
        what = (f"{setup.metric} {c.score:.4f}, {(c.size_bytes or 0) / 1e6:.2f} MB"
                + ("" if c.changed is not False else ", changed nothing") + (", cached" if c.cached else "")
                if c.ok else f"failed: {c.error[:80]}")  # fmt: skip
        say(f"[{step[0]}/{total}] {'built-in' if c.source == 'builtin' else f'trial {c.trial}'} {c.name}: {what}")

    try:
        with progress_bar("searching", total=total, enabled=progress) as bar:
            for i in range(0, len(builtins), cfg.workers):
                chunk = builtins[i : i + cfg.workers]
                for r, (o, hit) in zip(chunk, runner.run(chunk), strict=True):
                    res.candidates.append(_candidate(r.name, "builtin", None, r, o, hit, setup.threshold))
                    report(res.candidates[-1])
                    bar.advance()
            bar.advance(done)
            step[0] += done
            while done < cfg.budget:
                trials = [study.ask() for _ in range(min(cfg.workers, cfg.budget - done))]
                recipes = [space.suggest(t) for t in trials]
                outcomes = runner.run(recipes)
                batch = [_candidate(r.name, "trial", t.number, r, o, hit, setup.threshold)
                         for t, r, (o, hit) in zip(trials, recipes, outcomes, strict=True)]  # fmt: skip
                if timer is not None and cfg.objective != "size":  # workers idle: time this batch here
                    timer.time([c for c in batch if c.ok and not timer.cached(c)], "batch")
                for t, c in zip(trials, batch, strict=True):
                    report(c)
                    if c.ok and cfg.objective != "size" and c.latency_ratio is None:
                        c.error = "no latency: the model could not be timed"
                    t.set_user_attr("candidate", c.to_dict())
                    if c.ok:
                        t.set_constraint("accuracy", setup.threshold - float(c.score or 0.0))  # <= 0: feasible
                        study.tell(t, _objective_values(cfg.objective, c))
                    else:
                        study.tell(t, state=TrialState.FAIL)
                    done += 1
                    bar.advance()
                    if on_trial is not None:
                        on_trial(c)
    finally:
        executor.close()
    cached_count = runner.hits
    for t in _finished(study):
        d = dict(t.user_attrs.get("candidate") or {})
        if not d:
            continue
        d["trial"] = t.number
        res.candidates.append(Candidate(**{k: d[k] for k in Candidate.__dataclass_fields__ if k in d}))
    res.trials = done
    res.evaluated, res.cache_hits = runner.evaluated, cached_count
    res.retries = getattr(executor, "retries", 0)
    _finish(res, proto_path=src, data=data_p, test=Path(test_data) if test_data else None, cfg=cfg, setup=setup,
            timer=timer)  # fmt: skip
    return res


def _finish(res: SearchResult, *, proto_path: Path, data: Path | None, test: Path | None, cfg: SearchConfig,
            setup: _Setup, timer: _Timer | None) -> None:  # fmt: skip
    """Pareto front, finalists timed, choice, the chosen model written and re-measured on the test data."""
    from tensorslim.recipe.apply import apply_recipe

    ok = [c for c in res.candidates if c.ok]
    seen: dict[str, Candidate] = {}
    for c in ok:
        seen.setdefault(c.recipe_hash, c)
    uniq = list(seen.values())
    for i in pareto_indices([_objective_values(cfg.objective, c) for c in uniq]):
        uniq[i].pareto = True
    for c in res.candidates:  # duplicates of a front member are on the front too
        c.pareto = c.ok and seen.get(c.recipe_hash) is not None and seen[c.recipe_hash].pareto
    feasible = [c for c in uniq if c.feasible]
    failed = [c for c in res.candidates if not c.ok]
    if failed:
        res.notes.append(f"{len(failed)} candidate(s) failed; see their error")
    key = _objective_key(cfg.objective, res.float_size_bytes, res.float_latency_ms)
    if timer is not None:  # finalists: built-in recipes, the front and the smallest feasible, re-timed together
        finalists = [c for c in res.candidates if c.ok and (c.source == "builtin" or c.pareto)]
        if feasible and cfg.objective == "size":
            finalists.append(min(feasible, key=key))
        timer.time(finalists, "final")
        for c in res.candidates:  # duplicates of a finalist (same passes) share its figures
            twin = next((f for f in finalists if f.recipe_hash == c.recipe_hash), None)
            if twin is not None and c is not twin and twin.timing is not None:
                c.latency_ms, c.latency_ci, c.latency_ratio = twin.latency_ms, twin.latency_ci, twin.latency_ratio
                c.latency_ratio_ci, c.session_bytes, c.timing = twin.latency_ratio_ci, twin.session_bytes, twin.timing
                c.file = twin.file
        if timer.float is not None:
            res.float_latency_ms, res.float_timing = timer.float.p50_ms, timer.float.to_dict()
        res.busy = timer.busy
        res.notes.extend(timer.notes)  # models that could not be timed
        timer.keep_only(finalists)
        if cfg.objective != "size":  # the choice uses the finalists' own re-taken figures
            final = {f.recipe_hash for f in finalists}
            feasible = [c for c in feasible if c.recipe_hash in final]
    if not feasible:
        return
    best = min(feasible, key=key)
    if _measurably_slower(best):  # the choice would make the model slower than the float model it came from
        said = f"{best.name} at {best.latency_ratio:.2f}x float latency"
        if best.latency_ratio_ci is not None:
            said += f" [{best.latency_ratio_ci[0]:.2f}, {best.latency_ratio_ci[1]:.2f}]"
        if cfg.objective == "latency":
            res.slower_than_float = (f"every candidate within the budget runs slower than the float model on this "
                                     f"machine (the fastest: {said})")  # fmt: skip
            return
        res.notes.append(f"the chosen model runs slower than the float model on this machine ({said})")
    res.chosen = best
    from tensorslim.search.worker import without_latency_check

    recipe = recipe_from_dict(without_latency_check(best.recipe))  # the same bytes as the candidate measured
    path = res.output_dir / f"best{_suffix(recipe)}"
    for old in (res.output_dir / "best.onnx", res.output_dir / "best.tslim"):
        if old != path:
            old.unlink(missing_ok=True)
    apply_recipe(recipe, proto_path, path, data=data, seed=cfg.seed, progress=False)
    write_text_atomic(res.output_dir / "best.yaml", dump_recipe(recipe))
    res.chosen_path = path
    if test is not None:
        res.test = _measure_test(proto_path, path, test, setup, cfg)
        if not res.test["within_budget"]:
            res.notes.append(
                f"on the test data the chosen model scores {res.test['chosen_score']:.4f} against "
                f"{res.test['float_score']:.4f}: outside the budget (selection and test data disagree)"
            )


def _measurably_slower(c: Candidate) -> bool:
    """Whether ``c`` timed slower than the float model, its whole interval above 1 (no timing: not known)."""
    if c.latency_ratio is None:
        return False
    low = c.latency_ratio_ci[0] if c.latency_ratio_ci is not None else c.latency_ratio
    return low > 1.0


def _measure_test(model: Path, chosen: Path, test: Path, setup: _Setup, cfg: SearchConfig) -> dict[str, Any]:
    from tensorslim.evaluate.compare import run_dataset
    from tensorslim.evaluate.data import load_npz
    from tensorslim.evaluate.metrics import resolve_metric
    from tensorslim.runtime.base import open_runtime

    metric = resolve_metric(setup.metric)
    ref_rt = open_runtime(model, threads=1)
    ds = load_npz(test, ref_rt.inputs)
    ref = run_dataset(ref_rt, ds, metric.batch_size)
    cand = run_dataset(open_runtime(chosen, threads=1), ds, metric.batch_size)
    f_score = metric.score(ref, ds, ref)
    c_score = metric.score(cand, ds, ref)
    thr = metric.threshold(f_score, cfg.max_drop, cfg.min_score)
    return {
        "data": str(test),
        "num_samples": ds.num_samples,
        "float_score": f_score,
        "chosen_score": c_score,
        "drop": f_score - c_score,
        "within_budget": bool(c_score >= thr - 1e-12),
    }


def write_summary(res: SearchResult, path: Path) -> None:
    """The result as JSON at ``path`` (atomic)."""
    from tensorslim._files import write_text_atomic

    write_text_atomic(path, json.dumps(res.to_dict(), indent=2, default=str))
