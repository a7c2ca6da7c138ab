"""Plain YAML for recipes, with budgets: no Python tags, no merge keys, no duplicate keys, bounded nesting and
bounded alias expansion.

``yaml.safe_load`` builds no Python objects from tags, but it still expands aliases by reference (a 523-byte
"billion laughs" document becomes 10^9 strings to walk), recurses once per nesting level (10,000 levels is a
``RecursionError``), keeps the last of two equal keys silently and applies ``<<`` merge keys. :func:`load_yaml`
refuses all of these with a :class:`ValueError` naming the problem, before the document is constructed.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "MAX_NODES", "load_yaml"]

#: deepest nesting of mappings and sequences accepted (recipes need about 6)
MAX_DEPTH = 64
#: most nodes the document may hold with every alias expanded
MAX_NODES = 100_000


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise ValueError(f"the document nests deeper than {MAX_DEPTH} levels (line {mark.line + 1})")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                raise ValueError(f"merge keys (<<) are not accepted (line {line}); write the keys out")
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:
                raise ValueError(f"a mapping key is not a plain value (line {key_node.start_mark.line + 1})") from None
            if dup:
                raise ValueError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1}); give each key once")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: Any) -> int:
    """Nodes in the document with aliases expanded (aliases share node objects: memoized, linear time)."""
    sizes: dict[int, int] = {}
    order: list[Any] = []
    stack = [root]
    while stack:  # post-order without recursion
        n = stack.pop()
        if id(n) in sizes:
            continue
        sizes[id(n)] = -1
        order.append(n)
        if isinstance(n, yaml.MappingNode):
            stack.extend(x for kv in n.value for x in kv)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    for n in reversed(order):
        if isinstance(n, yaml.MappingNode):
            kids = [x for kv in n.value for x in kv]
        elif isinstance(n, yaml.SequenceNode):
            kids = list(n.value)
        else:
            kids = []
        sizes[id(n)] = min(1 + sum(max(sizes[id(k)], 1) for k in kids), MAX_NODES + 1)
    return sizes[id(root)]


def load_yaml(text: str) -> Any:
    """Parse one plain YAML document within the budgets.

    Raises:
        ValueError: nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_NODES` nodes with aliases
            expanded, a merge key, a duplicate key.
        yaml.YAMLError: the text is not valid YAML (or uses a tag the safe loader does not know).
    """
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        if _expanded_size(root) > MAX_NODES:
            raise ValueError(
                f"the document expands to more than {MAX_NODES:,} values through aliases (&/*); a recipe needs "
                "none: write the values out"
            )
        return loader.construct_document(root)
    finally:
        loader.dispose()
