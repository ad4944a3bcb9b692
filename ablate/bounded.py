"""Reading YAML and JSON a user (or anyone who can write to the storage) hands over, with
bounds on what the text may expand to, so a hostile file is one short error, not minutes of
work and gigabytes of memory.

- YAML's anchors and aliases let a few hundred bytes name a billion values (nine levels of
  ten aliases each: the "billion laughs"). PyYAML shares the aliased nodes, so loading is
  cheap, but every consumer that walks the result (validation, an error's ``repr``,
  ``json.dumps``, ``copy.deepcopy``) expands them. :func:`load_yaml` counts the values a
  document expands to, aliases expanded, before anything is built from it, and refuses more
  than :data:`MAX_VALUES`, a recursive alias, or nesting deeper than :data:`MAX_DEPTH`.
- JSON nests without bound, and deep nesting exhausts Python's recursion in the parser or in
  any code that walks the result. :func:`load_json` refuses nesting deeper than
  :data:`MAX_JSON_DEPTH` (the study's records nest a spec, so they may nest deeper than one).

Errors are :class:`ValueError` with a short message (no part of the text in it); callers name
the file.
"""

from __future__ import annotations

import json
from typing import Any

MAX_VALUES = 100_000  # per YAML document, aliases expanded: a study spec has hundreds
MAX_DEPTH = 32  # of YAML: a study spec nests about 7 deep
MAX_JSON_DEPTH = 64  # of a JSON record: a study record holds a spec, one level down


class TooLarge(ValueError):
    """A text that expands to more than the bounds allow (see the module docstring)."""


TOO_MANY = (f"expands to more than {MAX_VALUES:,} values (YAML aliases are expanded; write the "
            f"values out, or use fewer aliases)")
RECURSIVE = "has a recursive alias (an anchor used inside itself)"
TOO_DEEP = "nests deeper than {depth} levels"


def _bounded_loader() -> type:
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """PyYAML's safe loader that refuses deep nesting while it composes the document and,
        once composed, one that expands to too many values."""

        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise TooLarge(TOO_DEEP.format(depth=MAX_DEPTH))
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def compose_document(self) -> Any:
            node = super().compose_document()
            expanded_size(node)
            return node

    return BoundedLoader


def expanded_size(root: Any) -> int:
    """The number of values the YAML node ``root`` expands to, every alias expanded (each
    shared node counted once per use), without expanding anything.

    Raises:
        TooLarge: More than :data:`MAX_VALUES`, or a node that contains itself.
    """
    import yaml

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:  # iterative post-order: a deep document cannot exhaust the recursion limit
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = [] if isinstance(node, yaml.ScalarNode) else (
            [part for pair in node.value for part in pair]
            if isinstance(node, yaml.MappingNode) else list(node.value))
        if done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_VALUES:
                raise TooLarge(TOO_MANY)
            continue
        if id(node) in open_nodes:
            raise TooLarge(RECURSIVE)
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise TooLarge(RECURSIVE)
            stack.append((child, False))
    return sizes[id(root)]


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` within the bounds of the module docstring.

    Raises:
        TooLarge: The document is too large once expanded, recursive, or too deep.
        yaml.YAMLError: It is not YAML.
    """
    import yaml

    return yaml.load(text, Loader=_bounded_loader())  # noqa: S506 (a SafeLoader)


def load_json(text: str | bytes) -> Any:
    """``json.loads(text)``, refusing nesting deeper than :data:`MAX_JSON_DEPTH`.

    Raises:
        TooLarge: Nested too deep.
        ValueError: Not JSON (or not UTF-8).
    """
    try:
        body = json.loads(text)
    except RecursionError:
        raise TooLarge(TOO_DEEP.format(depth=MAX_JSON_DEPTH)) from None
    if json_depth(body) > MAX_JSON_DEPTH:
        raise TooLarge(TOO_DEEP.format(depth=MAX_JSON_DEPTH))
    return body


def json_depth(body: Any) -> int:
    """How deep lists and objects nest in ``body`` (a scalar: 0), counted without recursion."""
    deepest, stack = 0, [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in value)
    return deepest
