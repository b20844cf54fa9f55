"""YAML with alias expansion bounded: what camwatch uses to read its config and YAML inventories.

``yaml.SafeLoader`` refuses arbitrary objects but not a "billion laughs": nine anchored lists,
each naming the previous one nine times, make a file of a few hundred bytes that PyYAML loads
in milliseconds (an alias is a shared reference) and that stands for 9^9 values as soon as
anything walks it: validating such a config ran past 60 s and 3 GB.

So the document is composed first (nodes, aliases still shared), the number of nodes it
*expands* to is counted over that graph with each shared node counted once per use (linear in
the nodes written, whatever the expansion), and only a document within the bound is
constructed. Bound: :data:`MIN_NODES` nodes, or :data:`RATIO` times the nodes written in the
file when that is more, so a large inventory may use ``<<: *defaults`` on every row while a
small file cannot expand to a billion. A recursive alias (a node containing itself) is refused
too: nothing camwatch reads can be infinite.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MIN_NODES = 1_000_000  # a config has a few hundred nodes; a 100,000-row inventory ~4 million
RATIO = 10

__all__ = ["MIN_NODES", "RATIO", "AliasBombError", "expanded_size", "load"]


class AliasBombError(yaml.MarkedYAMLError):
    """The document expands (through aliases) beyond the bound, or refers to itself."""


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def expanded_size(root: Node, limit: int) -> int:
    """How many nodes ``root`` stands for once every alias is replaced by a copy of what it
    names. Raises :class:`AliasBombError` past ``limit`` or on a recursive alias. Iterative
    (no recursion limit) and memoised per node: O(nodes written + edges)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()  # the ancestors of the node being visited
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            if total > limit:
                raise AliasBombError(
                    None, None,
                    f"aliases expand the document to more than {limit:,} nodes (the limit: "
                    f"{RATIO} times the nodes written, at least {MIN_NODES:,}); refused",
                    node.start_mark)
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise AliasBombError(None, None, "an alias refers to a node that contains it "
                                             "(a recursive structure); refused", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _written(root: Node) -> int:
    """Distinct nodes in the composed graph: what the file itself spells out."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(_children(node))
    return len(seen)


def load(text: str, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    """Parse one YAML document like ``yaml.load(text, Loader=loader)``, refusing a document
    whose aliases expand past the bound (:class:`AliasBombError`, a ``MarkedYAMLError``
    pointing at the node where the count crossed it). Deep nesting that exhausts Python's
    recursion raises a plain ``yaml.YAMLError`` instead of ``RecursionError``."""
    ld = loader(text)
    try:
        root = ld.get_single_node()
        if root is None:
            return None
        expanded_size(root, max(MIN_NODES, RATIO * _written(root)))
        return ld.construct_document(root)
    except RecursionError:
        raise yaml.YAMLError("nesting too deep to parse") from None
    finally:
        ld.dispose()
