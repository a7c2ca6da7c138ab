"""Recipe schema v1: strict, versioned YAML data that names a sequence of passes and per-layer rules.

A recipe::

    version: 1
    name: static-int8
    description: int8 activations and weights, QDQ, calibrated on data
    passes:
      - pass: static_quant
        config: {calibration: percentile, granularity: per_channel}
        rules:
          - match: {op: Softmax}
            skip: true

is parsed by :func:`recipe_from_dict` into frozen :class:`Recipe` / :class:`PassSpec` / :class:`Rule` objects.
Every key is checked at every level (unknown keys are rejected with their path and the allowed keys), config
fields are checked against the pass's config dataclass at run time (its fields, its value types, then its own
``__post_init__`` validation), and YAML is read with ``yaml.safe_load`` only: no tag can build a Python object.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorslim.errors import InputError
from tensorslim.registry import PASSES, pass_entry

__all__ = [
    "PASS_KINDS",
    "SCHEMA_VERSION",
    "FoldBatchNormConfig",
    "PassSpec",
    "Recipe",
    "RecipeError",
    "Rule",
    "build_config",
    "config_class",
    "dump_recipe",
    "load_recipe",
    "recipe_from_dict",
    "recipe_hash",
]

SCHEMA_VERSION = 1
PASS_KINDS: tuple[str, ...] = tuple(e.kind for e in PASSES)  # every kind of the registry, in its order
_TOP_KEYS = ("version", "name", "description", "passes")
_PASS_KEYS = ("pass", "config", "rules")
_RULE_KEYS = ("match", "config", "skip")
_MATCH_KEYS = ("name", "op")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RecipeError(InputError):
    """A recipe is malformed; the message starts with the key path of the problem (``passes[1].config.bits``)."""


@dataclass(frozen=True)
class FoldBatchNormConfig:
    """``fold_batchnorm`` takes no options (Conv -> BatchNormalization pairs are folded)."""


def config_class(kind: str) -> type:
    """The config dataclass of pass ``kind`` (imported lazily, from :mod:`tensorslim.registry`).

    Raises:
        RecipeError: unknown kind.
    """
    entry = pass_entry(kind)
    if entry is None:
        raise RecipeError(f"unknown pass {kind!r}; allowed: {', '.join(PASS_KINDS)}")
    return entry.config_class()


@dataclass(frozen=True)
class Rule:
    """A per-layer rule of one pass: nodes matching ``name`` (``re.search``) and ``op`` (exact) get ``config``
    overrides, or are left untouched (``skip``). Rules are applied in order; the later matching rule wins."""

    name: str | None = None
    op: str | None = None
    config: Mapping[str, Any] | None = None
    skip: bool = False

    def matches(self, node_name: str, op_type: str) -> bool:
        """Whether a node with this name and op type matches the rule."""
        if self.op is not None and op_type != self.op:
            return False
        return self.name is None or re.search(self.name, node_name) is not None

    def to_dict(self) -> dict[str, Any]:
        """The rule as recipe data."""
        match: dict[str, Any] = {}
        if self.name is not None:
            match["name"] = self.name
        if self.op is not None:
            match["op"] = self.op
        d: dict[str, Any] = {"match": match}
        if self.config is not None:
            d["config"] = _plain(self.config)
        if self.skip:
            d["skip"] = True
        return d


@dataclass(frozen=True)
class PassSpec:
    """One step of a recipe: the pass kind, its config fields (as written), and per-layer rules."""

    kind: str
    config: Mapping[str, Any]
    rules: tuple[Rule, ...] = ()

    def build(self, **extra: Any) -> Any:
        """The pass's config dataclass built from ``config`` (plus ``extra`` fields)."""
        return build_config(self.kind, {**self.config, **extra}, "config")

    def to_dict(self) -> dict[str, Any]:
        """The step as recipe data."""
        d: dict[str, Any] = {"pass": self.kind, "config": _plain(self.config)}
        if self.rules:
            d["rules"] = [r.to_dict() for r in self.rules]
        return d


@dataclass(frozen=True)
class Recipe:
    """A versioned, named sequence of passes."""

    version: int
    name: str
    description: str
    passes: tuple[PassSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (lists, dicts, scalars): what :func:`recipe_from_dict` reads back."""
        return {
            "version": self.version,
            "name": self.name,
            "description": self.description,
            "passes": [p.to_dict() for p in self.passes],
        }


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v


def _type_name(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)  # fmt: skip


def _mapping(v: Any, path: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise RecipeError(f"{path or 'recipe'}: expected a mapping with keys {', '.join(allowed)}, got {_type_name(v)}")
    for k in v:
        if k not in allowed:
            where = f"{path}.{k}" if path else str(k)
            raise RecipeError(f"{where}: unknown key; allowed: {', '.join(allowed)}")
    return v


def _field_kinds(annotation: Any) -> set[str]:
    """Value kinds a config field accepts, read from its annotation: int, float, str, bool, none, list."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kinds: set[str] = set()
    for part in (p.strip() for p in text.split("|")):
        if part.startswith(("tuple", "list", "Sequence")):
            kinds.add("list")
        elif part in ("int", "float", "str", "bool"):
            kinds.add(part)
        elif part == "None":
            kinds.add("none")
        else:  # enums and other named types are written as their string value
            kinds.add("str")
    return kinds


_SCALARS: tuple[tuple[type, str], ...] = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"))


def _check_value(value: Any, kinds: set[str], path: str) -> Any:
    """``value`` checked against the field's kinds; lists become tuples."""
    if value is None and "none" in kinds:
        return None
    kind = next((k for t, k in _SCALARS if isinstance(value, t)), "")  # bool first: a bool is an int
    if kind and kind in kinds:
        return value
    if kind in ("int", "str") and "float" in kinds:  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, list | tuple) and "list" in kinds:
        for i, x in enumerate(value):
            if not isinstance(x, str | int | float | bool) or x is None:
                raise RecipeError(f"{path}[{i}]: expected a scalar, got {_type_name(x)}")
        return tuple(value)
    want = sorted({"list": "a list", "none": "null", "int": "an integer", "float": "a number", "str": "a string",
                   "bool": "a boolean"}[k] for k in kinds)  # fmt: skip
    raise RecipeError(f"{path}: expected {' or '.join(want)}, got {_type_name(value)} {value!r}")


def check_config(kind: str, config: Any, path: str) -> dict[str, Any]:
    """``config`` checked against the fields of pass ``kind``'s config dataclass (names and value types).

    Raises:
        RecipeError: not a mapping, unknown field, or a value of the wrong type.
    """
    cls = config_class(kind)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if config is None:
        return {}
    allowed = tuple(fields)
    if not isinstance(config, Mapping):
        raise RecipeError(f"{path}: expected a mapping of {kind} options, got {_type_name(config)}")
    out: dict[str, Any] = {}
    for k, v in config.items():
        if k not in fields:
            listed = ", ".join(allowed) if allowed else f"(none: {kind} has no options)"
            raise RecipeError(f"{path}.{k}: unknown key; allowed: {listed}")
        out[str(k)] = _check_value(v, _field_kinds(fields[k].type), f"{path}.{k}")
    return out


def build_config(kind: str, config: Mapping[str, Any], path: str) -> Any:
    """Build pass ``kind``'s config dataclass from ``config``; its ``ValueError`` becomes a :class:`RecipeError`."""
    cls = config_class(kind)
    checked = check_config(kind, dict(config), path)
    try:
        return cls(**checked)
    except (ValueError, TypeError) as e:
        msg = str(e)
        field = msg.split(":", 1)[0].strip()
        if field in checked:  # the dataclass names the field first: "bits: 3 is not one of 4, 8"
            raise RecipeError(f"{path}.{field}: {msg.split(':', 1)[1].strip()}") from e
        raise RecipeError(f"{path}: {msg}") from e


def _parse_rule(kind: str, d: Any, path: str) -> Rule:
    d = _mapping(d, path, _RULE_KEYS)
    if "match" not in d:
        raise RecipeError(f"{path}: a rule needs match: {{name: REGEX, op: OP_TYPE}}")
    match = _mapping(d["match"], f"{path}.match", _MATCH_KEYS)
    name, op = match.get("name"), match.get("op")
    if name is None and op is None:
        raise RecipeError(f"{path}.match: give name (a regex on node names) or op (an op type), or both")
    if name is not None:
        if not isinstance(name, str):
            raise RecipeError(f"{path}.match.name: expected a string (a regex), got {_type_name(name)}")
        from tensorslim._regex import compile_user_regex

        try:
            compile_user_regex(name, f"{path}.match.name")
        except ValueError as e:
            raise RecipeError(str(e)) from None
    if op is not None and (not isinstance(op, str) or not op):
        raise RecipeError(f"{path}.match.op: expected an op type such as MatMul, got {_type_name(op)} {op!r}")
    skip = d.get("skip", False)
    if not isinstance(skip, bool):
        raise RecipeError(f"{path}.skip: expected true or false, got {_type_name(skip)} {skip!r}")
    config = d.get("config")
    if config is not None and skip:
        raise RecipeError(f"{path}: give either config (overrides) or skip: true, not both")
    if config is None and not skip:
        raise RecipeError(f"{path}: a rule needs config (overrides for matching nodes) or skip: true")
    checked = None
    if config is not None:
        from tensorslim.recipe.rules import check_rule_config

        checked = check_rule_config(kind, config, f"{path}.config")
    return Rule(name=name, op=op, config=checked, skip=skip)


def _parse_pass(d: Any, path: str) -> PassSpec:
    d = _mapping(d, path, _PASS_KEYS)
    kind = d.get("pass")
    if kind is None:
        raise RecipeError(f"{path}.pass: missing; one of {', '.join(PASS_KINDS)}")
    if not isinstance(kind, str) or kind not in PASS_KINDS:
        raise RecipeError(f"{path}.pass: unknown pass {kind!r}; allowed: {', '.join(PASS_KINDS)}")
    config = check_config(kind, d.get("config"), f"{path}.config")
    build_config(kind, config, f"{path}.config")
    rules_raw = d.get("rules") or []
    if not isinstance(rules_raw, list):
        raise RecipeError(f"{path}.rules: expected a list of rules, got {_type_name(rules_raw)}")
    rules = tuple(_parse_rule(kind, r, f"{path}.rules[{i}]") for i, r in enumerate(rules_raw))
    spec = PassSpec(kind=kind, config=config, rules=rules)
    from tensorslim.recipe.rules import check_rules

    check_rules(spec, path)
    return spec


def recipe_from_dict(d: Mapping[str, Any], *, source: str = "<dict>") -> Recipe:
    """Parse and validate recipe data (what ``yaml.safe_load`` returns).

    Raises:
        RecipeError: the first problem found, prefixed with ``source`` and its key path.
    """
    try:
        return _from_dict(d)
    except RecipeError as e:
        raise RecipeError(f"{source}: {e}") from e.__cause__


def _from_dict(d: Any) -> Recipe:
    d = _mapping(d, "", _TOP_KEYS)
    for k in _TOP_KEYS:
        if k not in d:
            raise RecipeError(f"{k}: missing; a recipe needs {', '.join(_TOP_KEYS)}")
    version = d["version"]
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise RecipeError(f"version: {version!r} is not supported; this tensorslim reads version {SCHEMA_VERSION}")
    name = d["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RecipeError(f"name: {name!r}: use letters, digits, '.', '_' and '-' (e.g. static-int8)")
    description = d["description"]
    if not isinstance(description, str):
        raise RecipeError(f"description: expected a string, got {_type_name(description)}")
    passes_raw = d["passes"]
    if not isinstance(passes_raw, list) or not passes_raw:
        raise RecipeError("passes: expected a non-empty list of passes")
    passes = tuple(_parse_pass(p, f"passes[{i}]") for i, p in enumerate(passes_raw))
    for i, p in enumerate(passes[:-1]):
        if p.kind == "pack":
            raise RecipeError(f"passes[{i}].pass: pack writes the final .tslim file; it must be the last pass")
    return Recipe(version=int(version), name=name, description=description, passes=passes)


def load_recipe(path_or_text: str | os.PathLike[str]) -> Recipe:
    """Load a recipe from a YAML file, or from YAML text (a string holding a newline).

    Only plain YAML is read (``yaml.safe_load`` with budgets, :mod:`tensorslim.recipe.yaml_safe`): tags such as
    ``!!python/object``, merge keys, duplicate keys, deep nesting and alias bombs are rejected.

    Raises:
        RecipeError: unreadable file, invalid YAML, or an invalid recipe.
    """
    import yaml

    if isinstance(path_or_text, str) and "\n" in path_or_text:
        text, source = path_or_text, "<text>"
    else:
        p = Path(path_or_text)
        if not p.is_file():
            raise RecipeError(
                f"{p}: no such recipe file; give a .yaml file or a built-in name (tensorslim recipe list)"
            )
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RecipeError(f"{p}: cannot read the recipe ({e})") from e
        source = str(p)
    from tensorslim.recipe.yaml_safe import load_yaml

    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise RecipeError(f"{source}: not valid plain YAML ({detail[:300]})") from None
    except (ValueError, RecursionError) as e:
        raise RecipeError(f"{source}: {e}" if str(e) else f"{source}: the YAML nests too deeply") from None
    return recipe_from_dict(data, source=source)


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML, deterministic (keys in schema order); ``load_recipe(dump_recipe(r)) == r``."""
    import yaml

    return str(yaml.safe_dump(recipe.to_dict(), sort_keys=False, default_flow_style=None, allow_unicode=True,
                              width=120))  # fmt: skip


def recipe_hash(recipe: Recipe) -> str:
    """SHA-256 (hex) of the recipe's canonical JSON (sorted keys): a stable cache key."""
    text = json.dumps(recipe.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()
