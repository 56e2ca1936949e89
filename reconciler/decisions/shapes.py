"""Check a JSON document against an input shape of the AWS SDK's own service model.

The shapes come as plain data (adapters/ecs_shapes.py turns botocore's model into it), so
this check is pure: a dict of shape name -> {"type", and by type "members" and "required"
(structure), "member" (list), "value" (map), "enum" (string)}. It walks the document and
answers the first problem as one line naming the JSON path (`containerDefinitions[0].memory:
expected an integer, got "512"`), or None.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

Shapes = Mapping[str, Mapping[str, Any]]

_SCALARS: dict[str, tuple[tuple[type, ...], str]] = {
    "string": ((str,), "a string"),
    "integer": ((int,), "an integer"),
    "long": ((int,), "an integer"),
    "boolean": ((bool,), "true or false"),
    "double": ((int, float), "a number"),
    "float": ((int, float), "a number"),
    "timestamp": ((str, int, float), "a timestamp"),
    "blob": ((str,), "a base64 string"),
}


def check_shape(value: Any, shapes: Shapes, root: str, *, path: str = "") -> str | None:
    """The first way `value` does not fit shape `root`, as `path: what`; None if it fits."""
    shape = shapes[root]
    kind = shape["type"]
    if kind == "structure":
        return _structure(value, shapes, shape, path)
    if kind == "list":
        if not isinstance(value, list):
            return _wrong(path, "a list", value)
        for index, item in enumerate(value):
            problem = check_shape(item, shapes, shape["member"], path=f"{path}[{index}]")
            if problem:
                return problem
        return None
    if kind == "map":
        if not isinstance(value, dict):
            return _wrong(path, "an object", value)
        for key, item in value.items():
            problem = check_shape(item, shapes, shape["value"], path=_join(path, str(key)))
            if problem:
                return problem
        return None
    return _scalar(value, kind, shape, path)


def _structure(value: Any, shapes: Shapes, shape: Mapping[str, Any], path: str) -> str | None:
    if not isinstance(value, dict):
        return _wrong(path, "an object", value)
    members: Mapping[str, str] = shape["members"]
    for key, item in value.items():
        if key not in members:
            near = difflib.get_close_matches(str(key), list(members), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            return f"{_join(path, str(key))}: unknown field{hint}"
        problem = check_shape(item, shapes, members[key], path=_join(path, key))
        if problem:
            return problem
    for key in shape.get("required", ()):
        if key not in value:
            return f"{_join(path, key)}: missing required field"
    return None


def _scalar(value: Any, kind: str, shape: Mapping[str, Any], path: str) -> str | None:
    types, said = _SCALARS.get(kind, ((object,), kind))
    # JSON's true is not an integer here, though Python's bool is an int.
    if isinstance(value, bool) and kind != "boolean":
        return _wrong(path, said, value)
    if not isinstance(value, types):
        return _wrong(path, said, value)
    enum = shape.get("enum")
    if enum and value not in enum:
        return f"{path or '.'}: {value!r} is not one of {', '.join(enum)}"
    return None


def _wrong(path: str, expected: str, value: Any) -> str:
    return f"{path or '.'}: expected {expected}, got {_kind(value)}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:39] + "\u2026"
        return f"the string {shown!r}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
