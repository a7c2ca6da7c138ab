"""The search space: Optuna parameters -> a :class:`~tensorslim.recipe.Recipe`.

A candidate is a chain of up to three stages, each a recipe pass::

    [prune (sparsity) | channel_prune (ratio)] -> [dynamic int8 | static int8 | fp16 | block-wise int4/int8
    | cluster] -> [pack]

with each stage's options (quantization form, granularity and range; calibration method, 16-bit activations and
the extra static options this tensorslim has; block size and bits; number of clusters) and per-layer fallbacks:
the ``k`` layers most sensitive to quantization (ranked once per search by
:func:`~tensorslim.diagnostics.layers.diagnose_layers`) stay float, or get 16-bit activations.
Parameters are categorical so that every candidate is a recipe a user could have written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tensorslim.recipe import SCHEMA_VERSION, PassSpec, Recipe, Rule
from tensorslim.registry import search_choices, search_kind

__all__ = ["SearchSpace", "recipe_from_params"]

FALLBACK_KS = (0, 1, 2, 4)


def _static_fields() -> frozenset[str]:
    from tensorslim.registry import pass_entry

    entry = pass_entry(search_kind("quant", "static"))
    return frozenset(f.name for f in dataclasses.fields(entry.config_class())) if entry else frozenset()


@dataclass(frozen=True)
class SearchSpace:
    """What the search may try on one model.

    Attributes:
        has_data: Calibration data is available (static quantization, data-aware pruning).
        op_types: Op types present in the model (channel pruning needs Conv or Gemm; block-wise needs MatMul,
            Gemm or Gather).
        sensitive: Node names ranked most sensitive first (per-layer fallbacks take a prefix).
        static_options: Fields of ``StaticQuantConfig`` in this tensorslim (newer options are searched when
            present).
    """

    has_data: bool
    op_types: frozenset[str]
    sensitive: tuple[str, ...] = ()
    static_options: frozenset[str] = dataclasses.field(default_factory=_static_fields)

    def suggest(self, trial: Any) -> Recipe:
        """Ask ``trial`` (an ``optuna.Trial``) for parameters and return their recipe."""
        p: dict[str, Any] = {}
        p["pre"] = trial.suggest_categorical("pre", self._pre_choices())
        if p["pre"] == "prune":
            p["sparsity"] = trial.suggest_categorical("sparsity", [0.3, 0.5, 0.7])
        elif p["pre"] == "channel_prune":
            p["channel_ratio"] = trial.suggest_categorical("channel_ratio", [0.25, 0.5, 0.75])
        p["quant"] = trial.suggest_categorical("quant", self._quant_choices())
        q = p["quant"]
        if q == "dynamic":
            p["form"] = trial.suggest_categorical("form", ["auto", "integer", "weight_only"])
            p["granularity"] = trial.suggest_categorical("granularity", ["per_channel", "per_tensor"])
            p["range"] = trial.suggest_categorical("range", ["mse", "minmax"])
        elif q == "static":
            p["calibration"] = trial.suggest_categorical("calibration", ["minmax", "percentile"])
            if "activation_bits" in self.static_options:
                p["activation_bits"] = trial.suggest_categorical("activation_bits", [8, 16])
            if "bias_correction" in self.static_options:
                p["bias_correction"] = trial.suggest_categorical("bias_correction", [False, True])
            if "equalize" in self.static_options:
                p["equalize"] = trial.suggest_categorical("equalize", [False, True])
        elif q == "blockwise":
            p["bits"] = trial.suggest_categorical("bits", [4, 8])
            p["block_size"] = trial.suggest_categorical("block_size", [32, 64, 128])
        elif q == "cluster":
            p["clusters"] = trial.suggest_categorical("clusters", [4, 8, 16, 32])
        if q in ("dynamic", "static") and self.sensitive:
            ks = [k for k in FALLBACK_KS if k <= len(self.sensitive)]
            p["fallback_k"] = trial.suggest_categorical("fallback_k", ks)
            if q == "static" and p["fallback_k"] and "activation_bits" in self.static_options:
                p["fallback"] = trial.suggest_categorical("fallback", ["float", "int16"])
        p["pack"] = trial.suggest_categorical("pack", [False, True])
        return recipe_from_params(p, self.sensitive)

    def _pre_choices(self) -> list[str]:
        return ["none", *search_choices("pre", has_data=self.has_data, op_types=self.op_types)]

    def _quant_choices(self) -> list[str]:
        return ["none", *search_choices("quant", has_data=self.has_data, op_types=self.op_types)]


def _exact(names: Sequence[str]) -> list[str]:
    return [f"^{re.escape(n)}$" for n in names]


def recipe_from_params(p: dict[str, Any], sensitive: Sequence[str] = ()) -> Recipe:
    """The recipe of one parameter set (see :meth:`SearchSpace.suggest` for the keys)."""
    passes: list[PassSpec] = []
    name: list[str] = []
    if p.get("pre") == "prune":
        sp = float(p["sparsity"])
        passes.append(PassSpec(search_kind("pre", "prune"), {"sparsity": sp}))
        name.append(f"prune{round(sp * 100)}")
    elif p.get("pre") == "channel_prune":
        r = float(p["channel_ratio"])
        passes.append(PassSpec(search_kind("pre", "channel_prune"), {"ratio": r}))
        name.append(f"chprune{round(r * 100)}")
    q = p.get("quant", "none")
    k = int(p.get("fallback_k", 0) or 0)
    fallback_nodes = list(sensitive[:k])
    skip_rules = tuple(Rule(name=rx, skip=True) for rx in _exact(fallback_nodes))
    if q == "dynamic":
        cfg: dict[str, Any] = {"form": p["form"], "granularity": p["granularity"], "range_method": p["range"]}
        passes.append(PassSpec(search_kind("quant", q), cfg, skip_rules))
        name.append(f"dyn-{p['form']}-{'pc' if p['granularity'] == 'per_channel' else 'pt'}-{p['range']}")
    elif q == "static":
        cfg = {"calibration": p["calibration"]}
        tag = f"static-{p['calibration']}"
        if p.get("activation_bits", 8) == 16:
            cfg["activation_bits"] = 16
            tag += "-a16"
        for opt in ("bias_correction", "equalize"):
            if p.get(opt):
                cfg[opt] = True
                tag += "-bc" if opt == "bias_correction" else "-eq"
        rules: tuple[Rule, ...] = skip_rules
        if fallback_nodes and p.get("fallback") == "int16":
            rules = tuple(Rule(name=rx, config={"activation_bits": 16}) for rx in _exact(fallback_nodes))
            tag += f"-int16x{k}"
        passes.append(PassSpec(search_kind("quant", q), cfg, rules))
        name.append(tag)
    elif q == "fp16":
        passes.append(PassSpec(search_kind("quant", q), {}))
        name.append("fp16")
    elif q == "blockwise":
        passes.append(PassSpec(search_kind("quant", q), {"bits": int(p["bits"]), "block_size": int(p["block_size"])}))
        name.append(f"int{p['bits']}-b{p['block_size']}")
    elif q == "cluster":
        c = int(p["clusters"])
        cfg = {"clusters": c, "granularity": "per_channel", "codebook_dtype": "float16"}
        passes.append(PassSpec(search_kind("quant", q), cfg))
        name.append(f"cluster{c}")
    if k and q in ("dynamic", "static") and not (q == "static" and p.get("fallback") == "int16"):
        name.append(f"float{k}")
    if p.get("pack"):
        passes.append(PassSpec("pack", {}))
        name.append("pack")
    if not passes:
        passes.append(PassSpec("fold_batchnorm", {}))
        name.append("float")
    return Recipe(SCHEMA_VERSION, "-".join(name)[:100], "found by tensorslim optimize's search", tuple(passes))
