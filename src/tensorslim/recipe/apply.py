"""Apply a recipe: its passes in order, in one process, through the same code paths as the CLI commands.

Each pass runs through its runner in :mod:`tensorslim.registry`: quantization passes through
:func:`tensorslim.pipeline.run_pipeline`, as ``ts.quantize`` does (BatchNormalization folding, the static
pass's weight-only follow-up, float16's NaN/Inf fallback), pruning and clustering through
:mod:`tensorslim.api.compression`. Per-layer rules become each pass's ``exclude`` patterns (see
:mod:`tensorslim.recipe.rules`). The input model is never modified; the output is written atomically.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from tensorslim.data import BatchAxes, Dataset
from tensorslim.data.load import DataLike
from tensorslim.errors import InputError, UnsupportedModelError
from tensorslim.passes.base import PassResult, WeightRecord
from tensorslim.recipe.rules import EXCLUDE_FIELD, exclude_regex, only_regex, plan_rules
from tensorslim.recipe.schema import PassSpec, Recipe, RecipeError, build_config
from tensorslim.registry import PassEntry, pass_entry

__all__ = ["RecipeResult", "StepResult", "apply_recipe", "needs_data"]



@dataclass
class StepResult:
    """What one pass of the recipe did."""

    index: int
    kind: str
    modified: bool
    seconds: float
    runs: int = 1
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class RecipeResult:
    """What :func:`apply_recipe` did.

    Attributes:
        output_path: the written ``.onnx`` (or ``.tslim``) file.
        input_bytes: serialized size of the input model.
        output_bytes: size of the output file.
        records: one record per weight and pass: what was done or why it was skipped.
        notes: what the passes reported (fallbacks, rules that matched nothing, ...).
        seconds: wall time.
        steps: one entry per pass.
        recipe: the recipe's name.
    """

    output_path: Path
    input_bytes: int
    output_bytes: int
    records: list[WeightRecord]
    notes: list[str]
    seconds: float
    steps: list[StepResult] = field(default_factory=list)
    recipe: str = ""

    @property
    def size_ratio(self) -> float:
        """Output size over input size."""
        return self.output_bytes / self.input_bytes if self.input_bytes else 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "recipe": self.recipe,
            "output_path": str(self.output_path),
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "size_ratio": self.size_ratio,
            "seconds": self.seconds,
            "steps": [s.to_dict() for s in self.steps],
            "weights": [r.to_dict() for r in self.records],
            "notes": list(self.notes),
        }


def _entry(kind: str) -> PassEntry:
    entry = pass_entry(kind)
    if entry is None:  # pragma: no cover - the schema admits registered kinds only
        raise RecipeError(f"unknown pass {kind!r}")
    return entry


def needs_data(spec: PassSpec) -> bool:
    """Whether the pass cannot run without calibration data (static_quant; GPTQ, Wanda, SparseGPT methods)."""
    configs = [dict(spec.config)] + [{**spec.config, **r.config} for r in spec.rules if r.config]
    return _entry(spec.kind).data_needed(configs)


def _with_seed(spec: PassSpec, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """``cfg`` with ``seed`` filled in where the pass has a seed field the recipe leaves unset."""
    from tensorslim.recipe.schema import config_class

    names = {f.name for f in dataclasses.fields(config_class(spec.kind))}
    return {**cfg, "seed": seed} if "seed" in names and "seed" not in cfg else cfg


def _run_once(kind: str, cfg: Any, model: onnx.ModelProto, data: Dataset | None, target: Any = None) -> PassResult:
    """One run of one pass, through its registry runner (the code path its command uses)."""
    entry = _entry(kind)
    if data is not None and entry.max_samples is not None and data.num_samples > entry.max_samples:
        data = data.head(entry.max_samples)
    return entry.run_function()(model, cfg, data, target)


def _merge_records(runs: list[list[WeightRecord]]) -> list[WeightRecord]:
    """One record per weight of the first run: the later run that changed it, else the first run's.

    Later runs also see the tensors earlier runs created (codes, scales); those get no record of their own.
    """
    if not runs:
        return []
    out: dict[str, WeightRecord] = {r.name: r for r in runs[0]}
    for records in runs[1:]:
        for r in records:
            if r.name in out and out[r.name].skipped and not r.skipped:
                out[r.name] = r
    return list(out.values())


def _run_step(
    index: int, spec: PassSpec, model: onnx.ModelProto, data: Dataset | None, seed: int, target: Any = None
) -> tuple[PassResult, StepResult]:
    path = f"passes[{index}]"
    t0 = time.perf_counter()
    notes: list[str] = []
    base = _with_seed(spec, dict(spec.config), seed)
    plan = plan_rules(spec, model, path)
    for i in plan.unmatched:
        notes.append(f"{path}.rules[{i}] matched no node")
    excl_field = EXCLUDE_FIELD.get(spec.kind, "")
    user_excl = tuple(base.get(excl_field, ()))
    runs: list[tuple[dict[str, Any], bool]] = []  # (config, tolerate "nothing to do")
    if _entry(spec.kind).rules == "activation_bits":
        cfg = dict(base)
        if plan.skip:
            cfg["exclude"] = (*user_excl, exclude_regex(plan.skip))
        wide = [n for over, names in plan.groups if over.get("activation_bits") == 16 for n in names]
        if wide:
            cfg["int16_nodes"] = (*tuple(cfg.get("int16_nodes", ())), exclude_regex(wide))
        runs.append((cfg, False))
    else:
        others = plan.skip + plan.grouped
        cfg = dict(base)
        if others:
            cfg[excl_field] = (*user_excl, exclude_regex(others))
        runs.append((cfg, bool(plan.groups)))
        for over, names in plan.groups:  # after the base run: new nodes it made are outside every group
            runs.append(({**base, **over, excl_field: (*user_excl, only_regex(names))}, True))
    model_cur, modified, all_records = model, False, []
    for cfg_dict, tolerate in runs:
        cfg = build_config(spec.kind, cfg_dict, f"{path}.config")
        try:
            res = _run_once(spec.kind, cfg, model_cur, data, target)
        except UnsupportedModelError as e:
            if not tolerate:
                raise type(e)(f"{path} ({spec.kind}): {e}") from e
            notes.append(f"{path} ({spec.kind}): a rule group had nothing to do ({e})")
            continue
        except InputError as e:
            raise type(e)(f"{path} ({spec.kind}): {e}") from e
        model_cur, modified = res.model, modified or res.modified
        all_records.append(res.records)
        notes.extend(res.notes)
    if not modified:
        notes.append(f"{path} ({spec.kind}) changed nothing")
    step = StepResult(index, spec.kind, modified, time.perf_counter() - t0, len(runs), notes)
    return PassResult(model_cur, modified, _merge_records(all_records), notes), step


def _check_output(recipe: Recipe, output: Path) -> None:
    packed = recipe.passes[-1].kind == "pack"
    want = ".tslim" if packed else ".onnx"
    if output.suffix.lower() != want:
        why = "the last pass is pack" if packed else "the recipe has no pack pass (add pass: pack for .tslim)"
        raise RecipeError(f"{output}: name the output *{want} ({why})")


def apply_recipe(
    recipe: Recipe,
    model: str | os.PathLike[str] | onnx.ModelProto,
    output: str | os.PathLike[str],
    *,
    data: DataLike | None = None,
    seed: int = 0,
    progress: bool | None = None,
    target_runtime: str | None = None,
    batch_axis: BatchAxes | None = None,
) -> RecipeResult:
    """Run ``recipe``'s passes on ``model`` in order and write the result to ``output``.

    Args:
        recipe: a validated recipe (:func:`~tensorslim.recipe.load_recipe`).
        model: a path to an ``.onnx`` file or a ``ModelProto`` (never modified).
        output: an ``.onnx`` file, or a ``.tslim`` file when the last pass is ``pack``; written atomically.
        data: calibration data in any form :func:`tensorslim.data.load_data` takes, shared by every pass.
        seed: fills the ``seed`` field of passes that have one (clustering) where the recipe leaves it unset.
        target_runtime: the oldest ONNX Runtime the output must load in (``onnxruntime>=1.17``); an error
            names what it lacks.
        progress: draw a progress bar (default: when stderr is a terminal).
        batch_axis: ``{input_name: axis}`` where the input shapes do not tell the batch axis.

    Raises:
        RecipeError: the output name does not fit the recipe, or a pass needs data and none was given.
        InputError: unreadable model or data, or a pass cannot run (the message names the pass).
    """
    from tensorslim import api
    from tensorslim.backends.onnx.io import check_output_path, model_size_bytes
    from tensorslim.pack import pack_model
    from tensorslim.progress import progress_bar
    from tensorslim.runtime.targets import check_target, target_for

    start = time.perf_counter()
    target = target_for(target_runtime, model_kind="onnx")
    out = Path(output)
    _check_output(recipe, out)
    check_output_path(out, *([model] if isinstance(model, str | os.PathLike) else []))
    if data is None:
        for i, spec in enumerate(recipe.passes):
            if needs_data(spec):
                raise RecipeError(f"{recipe.name}: passes[{i}] ({spec.kind}) needs calibration data; "
                                  "pass --data CALIB.npz (data= in Python)")  # fmt: skip
    proto, _ = api.as_model(model)
    input_bytes = model_size_bytes(proto)
    dataset = api.load_calibration(data, proto, batch_axis=batch_axis) if data is not None else None
    cur, records, notes, steps = proto, [], [], []
    body = [s for s in recipe.passes if s.kind != "pack"]
    last_quant: PassSpec | None = None
    with progress_bar(f"recipe {recipe.name}", total=len(recipe.passes), enabled=progress) as bar:
        for i, spec in enumerate(body):
            bar.describe(f"{recipe.name}: {spec.kind}")
            res, step = _run_step(i, spec, cur, dataset, seed, target)
            cur = res.model
            records.extend(res.records)
            notes.extend(res.notes)
            steps.append(step)
            if step.modified and _entry(spec.kind).quantizes:
                last_quant = spec
            bar.advance()
        check_target(cur, target)
        if last_quant is not None:  # the quantization mode, as quantize records it (diagnose reproduces it)
            from tensorslim.diagnostics.provenance import record_quantize

            if cur is proto:  # never write into the caller's model
                cur = onnx.ModelProto.FromString(proto.SerializeToString())
            record_quantize(cur, build_config(last_quant.kind, dict(last_quant.config), "config"),
                            data=dataset is not None)  # fmt: skip
        float16 = any(_entry(s.kind).float16 for s in body)
        if recipe.passes[-1].kind == "pack":
            api.verify_output(cur, float16=float16, source=proto)
            t = time.perf_counter()
            bar.describe(f"{recipe.name}: pack")
            rep = pack_model(cur, out, config=recipe.passes[-1].build())
            steps.append(StepResult(len(body), "pack", True, time.perf_counter() - t,
                                    notes=[f"{rep.bits_per_weight:.3f} bits per weight"]))  # fmt: skip
            bar.advance()
            output_bytes = rep.file_bytes
        else:
            api.write_output(cur, out, float16=float16, source=proto)
            output_bytes = out.stat().st_size
    return RecipeResult(out, input_bytes, output_bytes, records, notes, time.perf_counter() - start, steps, recipe.name)
