"""Per-layer rules: checked when a recipe is read, resolved against the model's nodes when it is applied.

Each node of the main graph takes the decision of the rules that match it, in order (the later rule wins):
``skip`` leaves it untouched, ``config`` overrides are merged over those of earlier matching rules. The
decisions become plain data (:class:`RulePlan`): the node names to exclude, and groups of nodes that share
one effective config. The pass then runs once for the nodes with the base config (the skipped nodes and
every group excluded) and once per group, with an exclude pattern that matches every node *outside* the
group (nodes the earlier runs created included)::

    rules: [{match: {op: Gemm}, config: {granularity: per_tensor}}, {match: {name: head}, skip: true}]
    ->  run 1: base config, exclude ^(head|fc1|fc2)$      (fc1, fc2: the Gemm nodes)
        run 2: granularity per_tensor, exclude ^(?!(fc1|fc2)$)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import onnx

from tensorslim.recipe.schema import RecipeError, build_config, check_config, config_class
from tensorslim.registry import PASSES, pass_entry

if TYPE_CHECKING:
    from tensorslim.recipe.schema import PassSpec

__all__ = [
    "CONFIG_RULE_KINDS",
    "EXCLUDE_FIELD",
    "RulePlan",
    "check_rule_config",
    "check_rules",
    "exclude_regex",
    "only_regex",
    "plan_rules",
]

# the config field that keeps nodes untouched, per pass kind (fold_batchnorm and pack take no rules)
EXCLUDE_FIELD: dict[str, str] = {e.kind: e.exclude_field for e in PASSES if e.exclude_field}
# kinds whose output weights are no longer float, so a later run of the pass never touches them again:
# per-layer config overrides (one run per group) are safe there
CONFIG_RULE_KINDS = tuple(e.kind for e in PASSES if e.rules == "config")
_WHY_NOT = {e.kind: e.why_skip_only for e in PASSES if e.why_skip_only}


def _activation_bits_rules(kind: str) -> bool:
    """Whether ``kind``'s rules may only skip nodes or set ``activation_bits`` (static quantization)."""
    entry = pass_entry(kind)
    return entry is not None and entry.rules == "activation_bits"


def check_rule_config(kind: str, config: Any, path: str) -> dict[str, Any]:
    """The config overrides of one rule of a ``kind`` pass, checked (kind, fields, value types).

    Raises:
        RecipeError: the kind takes no per-layer overrides, or a field is unknown or of the wrong type.
    """
    if kind not in EXCLUDE_FIELD:
        raise RecipeError(f"{path}: {kind} takes no rules")
    if _activation_bits_rules(kind):
        if not isinstance(config, Mapping) or set(config) != {"activation_bits"}:
            keys = ", ".join(map(str, config)) if isinstance(config, Mapping) else repr(config)
            raise RecipeError(f"{path}: {keys}: {kind} rules may only skip nodes or set activation_bits: 16 "
                              "(calibration runs once)")  # fmt: skip
        if config["activation_bits"] not in (8, 16) or isinstance(config["activation_bits"], bool):
            raise RecipeError(f"{path}.activation_bits: {config['activation_bits']!r} is not one of 8, 16")
        fields = {f.name for f in _fields(kind)}
        if "int16_nodes" not in fields:
            raise RecipeError(f"{path}.activation_bits: this tensorslim's {kind} has no 16-bit activations "
                              "(StaticQuantConfig has no int16_nodes field); remove the rule")  # fmt: skip
        return {"activation_bits": config["activation_bits"]}
    if kind not in CONFIG_RULE_KINDS:
        raise RecipeError(f"{path}: {kind} rules may only skip nodes ({_WHY_NOT[kind]}); use skip: true")
    checked = check_config(kind, config, path)
    if EXCLUDE_FIELD[kind] in checked:
        raise RecipeError(f"{path}.{EXCLUDE_FIELD[kind]}: not a per-layer option; use skip: true in the rule")
    return checked


def _fields(kind: str) -> list[Any]:
    import dataclasses

    return list(dataclasses.fields(config_class(kind)))


def check_rules(spec: PassSpec, path: str) -> None:
    """Check the rules of ``spec`` as a whole: the kind takes rules, and each override builds a valid config.

    Raises:
        RecipeError: with the rule's key path.
    """
    if spec.rules and spec.kind not in EXCLUDE_FIELD:
        raise RecipeError(f"{path}.rules: {spec.kind} takes no rules")
    for i, rule in enumerate(spec.rules):
        lowers = _activation_bits_rules(spec.kind) and rule.config and rule.config.get("activation_bits") == 8
        if lowers and spec.config.get("activation_bits") == 16:
            raise RecipeError(f"{path}.rules[{i}].config.activation_bits: 8 under activation_bits: 16 for the "
                              "whole model is not supported; set 8 in the pass config and 16 in rules")  # fmt: skip
        if rule.config is not None and not _activation_bits_rules(spec.kind):
            build_config(spec.kind, {**spec.config, **rule.config}, f"{path}.rules[{i}].config")


@dataclass
class RulePlan:
    """The rules of one pass resolved against a model's nodes.

    Attributes:
        skip: names of the nodes left untouched.
        groups: (config overrides, node names) per distinct effective override, in first-match order.
        unmatched: indices of rules that matched no node.
    """

    skip: list[str] = field(default_factory=list)
    groups: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)
    unmatched: list[int] = field(default_factory=list)

    @property
    def grouped(self) -> list[str]:
        """Every node name in a group."""
        return [n for _, names in self.groups for n in names]


def plan_rules(spec: PassSpec, model: onnx.ModelProto, path: str) -> RulePlan:
    """Resolve ``spec``'s rules against the nodes of ``model``'s main graph.

    Raises:
        RecipeError: a rule picks a node that has no name (it cannot be told apart from other nodes).
    """
    plan = RulePlan()
    hits = [0] * len(spec.rules)
    groups: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for node in model.graph.node:
        state: str | dict[str, Any] | None = None
        for i, rule in enumerate(spec.rules):
            if not rule.matches(node.name, node.op_type):
                continue
            hits[i] += 1
            earlier = state if isinstance(state, dict) else {}
            state = "skip" if rule.skip else {**earlier, **(rule.config or {})}
        if state is None:
            continue
        if not node.name:
            raise RecipeError(f"{path}.rules: a rule picks an unnamed {node.op_type} node; name the model's nodes "
                              "(rules tell nodes apart by name)")  # fmt: skip
        if state == "skip":
            plan.skip.append(node.name)
        elif isinstance(state, dict) and state:
            key = json.dumps(state, sort_keys=True, default=str)
            groups.setdefault(key, (state, []))[1].append(node.name)
    plan.groups = list(groups.values())
    plan.unmatched = [i for i, n in enumerate(hits) if n == 0]
    return plan


def only_regex(names: list[str]) -> str:
    """A regex that matches every node name except ``names`` (the exclude pattern of a group's run)."""
    return "^(?!(" + "|".join(re.escape(n) for n in names) + ")$)"


def exclude_regex(names: list[str]) -> str:
    """An anchored regex matching exactly ``names``."""
    from tensorslim.diagnostics.layers import exclude_regex as _exclude_regex

    return _exclude_regex(names)
