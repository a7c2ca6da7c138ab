"""Merge parallel MatMuls that read the same activation into one MatMul and a ``Split``.

Before -> after (the attention Q/K/V projections of a transformer are the typical case)::

    A = MatMul(X, W_a) [+ b_a]                    Y = MatMul(X, Concat(W_a, W_b, W_c, axis=1))
    B = MatMul(X, W_b) [+ b_b]        ->          [Y = Add(Y, Concat(b_a, b_b, b_c))]
    C = MatMul(X, W_c) [+ b_c]                    A, B, C = Split(Y, [N_a, N_b, N_c], axis=-1)

Every column of the merged product is computed exactly as before (same inputs, same reduction), so the
float function is unchanged up to the GEMM kernel's rounding. Decide, then apply: :func:`plan_merges`
returns the groups as plain data (:class:`MergeGroup`), :class:`MergeMatMulPass` rewrites them.

A MatMul joins a group when its second input is a 2-D float constant (initializer or ``Constant`` node of
its own graph, not a graph input or output) used by nothing else, and its first input is the group's
activation; the group's weights share dtype and input size. A bias is merged when every member's output
feeds exactly one ``Add`` whose other input is a 1-D constant of that member's output size used by
nothing else; otherwise the ``Add`` nodes are left after the ``Split``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from tensorslim._regex import name_matcher
from tensorslim.backends.onnx.editor import GraphEditor, opset_version
from tensorslim.backends.onnx.graph import GraphIndex
from tensorslim.backends.onnx.weights import GraphScope, WeightInfo, find_weights, iter_graphs
from tensorslim.errors import ConfigError
from tensorslim.passes._config import regex_tuple
from tensorslim.passes.base import Pass, PassResult, WeightRecord

__all__ = ["MergeGroup", "MergeMatMulConfig", "MergeMatMulPass", "MergeMember", "plan_merges"]


@dataclass(frozen=True)
class MergeMatMulConfig:
    """Configuration of the MatMul merge.

    Attributes:
        min_group: the fewest MatMuls worth merging (at least 2).
        merge_bias: also merge the bias ``Add`` after each MatMul (when every member has one).
        exclude: regular expressions; a MatMul whose node name matches any of them stays as it is.
    """

    min_group: int = 2
    merge_bias: bool = True
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        g = self.min_group
        if isinstance(g, bool) or not isinstance(g, int) or g < 2:
            raise ConfigError(f"min_group: must be an integer >= 2, got {g!r}")
        if not isinstance(self.merge_bias, bool):
            raise ConfigError(f"merge_bias: must be True or False, got {self.merge_bias!r}")
        object.__setattr__(self, "exclude", regex_tuple("exclude", self.exclude))


@dataclass(frozen=True)
class MergeMember:
    """One MatMul of a group: the node, its weight and, where it has one, its bias ``Add`` and bias."""

    node: onnx.NodeProto
    weight: WeightInfo
    add: onnx.NodeProto | None = None
    bias: WeightInfo | None = None

    @property
    def columns(self) -> int:
        """Output size of this member."""
        return int(self.weight.array.shape[1])


@dataclass(frozen=True)
class MergeGroup:
    """MatMuls of one graph that read the same activation, merged into one."""

    scope: GraphScope
    activation: str
    members: tuple[MergeMember, ...]
    merge_bias: bool

    @property
    def split(self) -> list[int]:
        """Output sizes of the members, in order."""
        return [m.columns for m in self.members]


def _node_name(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _graph_outputs(model: onnx.ModelProto) -> set[str]:
    return {o.name for scope in iter_graphs(model.graph) for o in scope.graph.output}


def _sole_use(w: WeightInfo, node: onnx.NodeProto, scope: GraphScope, outputs: set[str]) -> bool:
    """Whether ``w`` is a constant of ``scope`` that ``node`` alone consumes, once."""
    return (
        w.scope == scope
        and not w.graph_input
        and w.name not in outputs
        and len(w.uses) == 1
        and w.uses[0].node is node
        and w.is_float
    )


def plan_merges(model: onnx.ModelProto, config: MergeMatMulConfig | None = None) -> list[MergeGroup]:
    """Find the groups of MatMuls to merge (see the module docstring), in graph order."""
    cfg = config or MergeMatMulConfig()
    excluded = name_matcher(cfg.exclude)
    weights = {w.name: w for w in find_weights(model)}
    outputs = _graph_outputs(model)
    groups: list[MergeGroup] = []
    for scope in iter_graphs(model.graph):
        consumers = GraphIndex(scope.graph).consumers
        by_key: dict[tuple[str, str, int], list[MergeMember]] = {}
        for n in scope.graph.node:
            if n.op_type != "MatMul" or (n.domain or "") not in ("", "ai.onnx") or len(n.input) != 2:
                continue
            if excluded(_node_name(n)):
                continue
            w = weights.get(n.input[1])
            if w is None or w.array.ndim != 2 or n.input[0] in weights or not _sole_use(w, n, scope, outputs):
                continue
            member = MergeMember(n, w, *_bias_of(n, consumers, weights, scope, outputs, w.array.shape[1]))
            key = (n.input[0], str(w.array.dtype), int(w.array.shape[0]))
            by_key.setdefault(key, []).append(member)
        for (act, _, _), members in by_key.items():
            if len(members) < cfg.min_group:
                continue
            with_bias = cfg.merge_bias and all(m.add is not None for m in members)
            dtypes = {str(m.bias.array.dtype) for m in members if m.bias is not None}
            with_bias = with_bias and dtypes == {str(members[0].weight.array.dtype)}
            groups.append(MergeGroup(scope, act, tuple(members), with_bias))
    return groups


def _bias_of(
    node: onnx.NodeProto,
    consumers: dict[str, list[onnx.NodeProto]],
    weights: dict[str, WeightInfo],
    scope: GraphScope,
    outputs: set[str],
    columns: int,
) -> tuple[onnx.NodeProto | None, WeightInfo | None]:
    """The bias ``Add`` that alone consumes ``node``'s output, and its 1-D constant bias, or ``(None, None)``."""
    y = node.output[0]
    users = consumers.get(y, [])
    if y in outputs or len(users) != 1:
        return None, None
    add = users[0]
    if add.op_type != "Add" or (add.domain or "") not in ("", "ai.onnx") or len(add.input) != 2:
        return None, None
    other = add.input[1] if add.input[0] == y else add.input[0]
    b = weights.get(other)
    if other == y or b is None or b.array.shape != (columns,) or not _sole_use(b, add, scope, outputs):
        return None, None
    return add, b


class MergeMatMulPass(Pass):
    """Merge MatMuls with constant weights that read the same activation (see the module docstring)."""

    name = "merge_matmul"

    def __init__(self, config: MergeMatMulConfig | None = None) -> None:
        self.config = config or MergeMatMulConfig()

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Plan, then rewrite ``model`` in place (the base class hands us a copy)."""
        groups = plan_merges(model, self.config)
        if not groups:
            return PassResult(model, False, [], ["no MatMuls share an activation and constant weights"])
        editor = GraphEditor(model)
        records = [r for g in groups for r in apply_merge(editor, g, opset_version(model))]
        editor.apply()
        notes = [f"{len(groups)} groups of parallel MatMuls merged ({sum(len(g.members) for g in groups)} MatMuls)"]
        return PassResult(model, True, records, notes)


def apply_merge(editor: GraphEditor, group: MergeGroup, opset: int) -> list[WeightRecord]:
    """Rewrite one group with ``editor`` (applied by the caller); returns one record per merged tensor."""
    scope, members = group.scope, group.members
    first = members[0]
    as_constant = first.weight.source == "constant"
    base = _node_name(first.node)
    merged_w = np.concatenate([m.weight.array for m in members], axis=1)
    w_name = editor.add_tensor(scope, f"{first.weight.name}_merged", merged_w, as_constant=as_constant)
    y = editor.names(f"{base}_merged_output")
    nodes = [editor.node("MatMul", [group.activation, w_name], [y], f"{base}_Merged")]
    if group.merge_bias:
        merged_b = np.concatenate([m.bias.array for m in members if m.bias is not None])
        b_name = editor.add_tensor(scope, f"{base}_merged_bias", merged_b, as_constant=as_constant)
        y_b = editor.names(f"{base}_merged_biased")
        nodes.append(editor.node("Add", [y, b_name], [y_b], f"{base}_MergedBias"))
        y = y_b
        split_outputs = [m.add.output[0] for m in members if m.add is not None]
    else:
        split_outputs = [m.node.output[0] for m in members]
    sizes = np.array(group.split, np.int64)
    if opset >= 13:
        split_in = [y, editor.add_tensor(scope, f"{base}_merged_split", sizes, as_constant=as_constant)]
        attrs: dict[str, object] = {"axis": -1}
    else:
        split_in, attrs = [y], {"axis": -1, "split": [int(s) for s in sizes]}
    nodes.append(editor.node("Split", split_in, split_outputs, f"{base}_MergedSplit", **attrs))
    editor.replace(first.node, nodes)
    records = []
    for m in members:
        if m is not first:
            editor.drop_node(m.node)
        editor.drop_weight(scope, m.weight.name, m.weight.source)
        tensors = [m.weight]
        if group.merge_bias and m.add is not None and m.bias is not None:
            editor.drop_node(m.add)
            editor.drop_weight(scope, m.bias.name, m.bias.source)
            tensors.append(m.bias)
        for t in tensors:
            records.append(
                WeightRecord(
                    name=t.name,
                    ops=t.uses[0].op_type,
                    nodes=_node_name(t.uses[0].node),
                    shape=tuple(int(d) for d in t.array.shape),
                    action="merged",
                    reason=f"into {w_name if t is m.weight else b_name} with {len(members) - 1} parallel MatMuls",
                    bytes_before=t.nbytes,
                    bytes_after=t.nbytes,
                )
            )
    return records
