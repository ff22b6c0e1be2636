"""Where a YAML validation error points: the line of a key path, and the path as text."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import BaseModel

__all__ = ["NodeLines", "fields_at", "key_path"]


class NodeLines:
    """Line numbers of YAML nodes by key path, for error messages."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def line(self, loc: tuple[Any, ...]) -> int | None:
        """The line of the deepest key or item of ``loc`` found in the file."""
        node = self.root
        best = node.start_mark.line + 1 if node is not None else None
        for key in loc:
            found = self._child(node, key)
            if found is None:
                break
            mark, node = found
            best = mark.line + 1
        return best

    @staticmethod
    def _child(node: yaml.Node | None, key: Any) -> tuple[Any, yaml.Node] | None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    return k.start_mark, v
        if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            return node.value[key].start_mark, node.value[key]
        return None


def key_path(loc: Iterable[Any]) -> str:
    """``('choices', 'reduction', 2)`` -> ``choices.reduction[2]``."""
    out = ""
    for key in loc:
        if isinstance(key, int):
            out += f"[{key}]"
        elif key == "[key]" or not re.fullmatch(r"[\w-]+", str(key)):
            continue
        else:
            out += f".{key}" if out else str(key)
    return out or "(top level)"


def fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the pydantic model found at ``loc`` below ``root`` (or none)."""
    model: Any = root
    for key in loc:
        field = getattr(model, "model_fields", {}).get(key)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))
