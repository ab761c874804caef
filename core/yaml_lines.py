"""YAML that remembers where each mapping came from, so errors can name a line.

Used by the config documents admins apply and by the operator's `COSMO_MCP_SERVERS` file.
"""

from __future__ import annotations

from typing import Any

import yaml


class LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping, for error messages.

    Aliases are refused: a few lines of nested `*refs` expand to billions of nodes (the
    "billion laughs"), and a config document has no need for them.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not supported", mark
            )
        return super().compose_node(parent, index)


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    keys = {}
    for key_node, _ in node.value:
        keys[loader.construct_object(key_node)] = key_node.start_mark.line + 1
    mapping["__keylines__"] = keys
    return mapping


LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: strip_lines(v) for k, v in value.items() if k not in ("__line__", "__keylines__")
        }
    if isinstance(value, list):
        return [strip_lines(v) for v in value]
    return value


def line_of(raw: Any, loc: tuple[str | int, ...]) -> int | None:
    line = None
    node = raw
    for part in loc:
        if isinstance(node, dict):
            line = node.get("__keylines__", {}).get(part, node.get("__line__", line))
            if part not in node:
                break
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            if isinstance(node, dict):
                line = node.get("__line__", line)
        else:
            break
    return line
