"""The pass registry is the one table of passes: configs build, every mode, recipe kind and runner resolves through
it, each mode's pipeline is made of real passes, and the public surface is pinned."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import tensorslim as ts
from models import mlp_model, run
from tensorslim.modes import ONNX_MODES, TFLITE_MODES, mode_help
from tensorslim.recipe import PASS_KINDS, builtin_recipes
from tensorslim.recipe.rules import CONFIG_RULE_KINDS, EXCLUDE_FIELD
from tensorslim.registry import MODES, PASSES, pass_entry


@pytest.mark.parametrize("entry", PASSES, ids=lambda e: e.kind)
def test_every_entry_builds_its_config_and_finds_its_runner(entry) -> None:
    cls = entry.config_class()
    assert dataclasses.is_dataclass(cls)
    cls()  # the defaults are a valid config
    assert callable(entry.run_function())
    fields = {f.name for f in dataclasses.fields(cls)}
    if entry.exclude_field:
        assert entry.exclude_field in fields
    if entry.needs_data_when:
        assert entry.needs_data_when[0] in fields
    assert (entry.rules == "none") == (not entry.exclude_field)  # rules are resolved into the exclude field


def test_recipes_and_rules_read_the_registry() -> None:
    assert tuple(e.kind for e in PASSES) == PASS_KINDS
    assert set(EXCLUDE_FIELD) == {e.kind for e in PASSES if e.exclude_field}
    assert set(CONFIG_RULE_KINDS) == {e.kind for e in PASSES if e.rules == "config"}
    reg = builtin_recipes()
    for name in reg.names():
        for spec in reg.get(name).passes:
            entry = pass_entry(spec.kind)
            assert entry is not None, (name, spec.kind)
            assert isinstance(spec.build(), entry.config_class())


def test_every_cli_mode_resolves_through_the_registry(tmp_path: Path) -> None:
    from tensorslim.backends.tflite.quantize import TfliteMode
    from tensorslim.commands.quantize import _onnx_config

    assert list(TFLITE_MODES) == [m.value for m in TfliteMode]
    assert list(ONNX_MODES) == [m.name for m in MODES if m.format == "onnx"]
    text = mode_help()
    for mode in MODES:
        assert f"{mode.name}: {mode.help}" in text
        if mode.format != "onnx":
            continue
        entry = pass_entry(mode.kind)
        assert entry is not None and entry.quantizes, mode
        cfg = _onnx_config(mode.name, form="auto", scheme=None, granularity="per_channel", range_method=None,
                           ops=None, exclude=(), min_size=None, weight_encoding="auto", bits=4, block_size=32,
                           method="auto", accuracy_level=4, data=tmp_path if mode.name == "static" else None)  # fmt: skip
        assert isinstance(cfg, entry.config_class()), mode


def test_needs_data_comes_from_the_entry() -> None:
    from tensorslim.recipe.apply import needs_data
    from tensorslim.recipe.schema import PassSpec

    assert needs_data(PassSpec("static_quant", {}))
    assert needs_data(PassSpec("blockwise_quant", {"method": "gptq"}))
    assert not needs_data(PassSpec("blockwise_quant", {}))
    assert needs_data(PassSpec("prune", {"method": "wanda"}))
    assert not needs_data(PassSpec("dynamic_quant", {}))


def test_each_mode_is_a_named_pipeline_of_real_passes() -> None:
    names = {
        "dynamic_quant": ["fold_weight_chains", "fold_batchnorm", "float_fusions", "dynamic_quant"],
        "float16": ["fold_weight_chains", "fold_batchnorm", "float16"],
        "blockwise_quant": ["fold_weight_chains", "fold_batchnorm", "blockwise_quant"],
        "static_quant": ["fold_weight_chains", "fold_batchnorm", "static_then_weight_only"],
    }
    from tensorslim.api import load_calibration

    model, _ = mlp_model()
    data = load_calibration({"x": np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)}, model)
    for kind, want in names.items():
        entry = pass_entry(kind)
        assert entry is not None
        pipe = ts.mode_pipeline(entry.config_class()(), data)
        assert pipe.name == kind and [p.name for p in pipe.passes] == want, kind
    static = ts.mode_pipeline(ts.StaticQuantConfig(), data).passes[-1]
    assert [p.name for p in static.passes] == ["static_quant", "static_rest"]  # type: ignore[attr-defined]
    steps = static.passes[0].steps  # type: ignore[attr-defined]
    assert [s.pass_.name for s in steps] == ["qdq_opset", "static_prepare", "equalize_activations", "static_quant"]
    assert [s.counts for s in steps] == [False, False, False, True]  # preparation is never the pipeline's change
    flags = ts.StaticQuantConfig(equalize=True, smooth_quant=0.5, preprocess=False, exclude=("^fc$",))
    steps = ts.mode_pipeline(flags, data).passes[-1].passes[0].steps  # type: ignore[attr-defined]
    assert [s.pass_.name for s in steps] == ["qdq_opset", "static_prepare", "equalize", "equalize_activations",
                                             "smooth_quant", "static_quant"]  # fmt: skip
    assert not steps[1].pass_.config.preprocess
    assert (steps[4].pass_.config.alpha, steps[4].pass_.config.exclude) == (0.5, ("^fc$",))
    per_tensor = ts.mode_pipeline(ts.StaticQuantConfig(granularity="per_tensor"), data).passes[-1].passes[0].steps  # type: ignore[attr-defined]
    assert "equalize_activations" not in [s.pass_.name for s in per_tensor]  # scaled weights would round otherwise
    for s in steps[:-1]:  # each step is a registered pass a recipe can name
        entry = pass_entry(s.pass_.name)
        assert entry is not None and isinstance(s.pass_.config, entry.config_class()), s.pass_.name


def test_run_pipeline_is_what_quantize_runs() -> None:
    model, feeds = mlp_model(hidden=128)
    direct = ts.run_pipeline(model, ts.DynamicQuantConfig())
    api = ts.quantize(model)
    assert direct.modified and direct.model.graph.SerializeToString() == api.model.graph.SerializeToString()
    assert [r.name for r in direct.records] == [r.name for r in api.records]
    ref, got = run(model, feeds)[0], run(direct.model, feeds)[0]
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()


def test_public_surface_is_pinned() -> None:
    assert ts.__all__ == [
        "BenchReport", "BlockQuantConfig", "ChannelPruneConfig", "ChannelPrunePass", "ClusterConfig", "ClusterPass",
        "CompressReport", "Dataset", "DynamicQuantConfig", "DynamicQuantPass", "EvalReport", "Float16Config",
        "InputError", "InspectReport", "PackConfig", "PackReport", "Pass", "PassResult", "Pipeline", "PruneConfig",
        "PrunePass", "QuantizeResult", "Recipe", "RecipeError", "RecipeResult", "StaticQuantConfig",
        "TargetNotMetError", "TensorSlimError", "UnsupportedModelError", "WeightRecord", "__version__",
        "apply_recipe", "benchmark_models", "builtin_recipes", "cluster", "compress", "evaluate", "find_weights",
        "from_torch", "inspect_model", "load_model", "load_npz", "load_recipe", "mode_pipeline", "pack", "prune",
        "prune_channels", "quantize", "run_pipeline", "save_model", "unpack",
    ]  # fmt: skip
    for name in ts.__all__:
        assert getattr(ts, name) is not None, name


def test_one_api_package() -> None:
    import importlib.util

    import tensorslim.api as api
    from tensorslim.search.optimize import optimize_search

    for name in ("quantize", "QuantizeResult", "prune", "prune_channels", "cluster", "compress", "pack", "unpack",
                 "CompressReport"):  # fmt: skip
        assert getattr(api, name) is getattr(ts, name), name
    assert importlib.util.find_spec("tensorslim.compression") is None  # the API's one home is tensorslim.api
    assert callable(api.load_calibration) and callable(api.write_output) and callable(optimize_search)
