"""The input shapes of ECS operations, from the AWS SDK's own service model, as plain data
for decisions/shapes.py: the rendered definitions are checked against exactly what the API
will accept, with no copy of the model to keep up to date."""

from __future__ import annotations

import functools
from typing import Any

import botocore.session


@functools.cache
def input_shapes(operation: str) -> tuple[dict[str, dict[str, Any]], str]:
    """(shape name -> plain shape, root shape name) of `operation`'s input."""
    model = botocore.session.get_session().get_service_model("ecs")
    root = model.operation_model(operation).input_shape
    if root is None:  # pragma: no cover -- every ECS write takes input
        raise ValueError(f"ECS {operation} takes no input")
    shapes: dict[str, dict[str, Any]] = {}
    # botocore-stubs type the root as a structure; the walk meets every kind.
    pending: list[Any] = [root]
    while pending:
        shape = pending.pop()
        if shape.name in shapes:
            continue
        plain: dict[str, Any] = {"type": shape.type_name}
        if shape.type_name == "structure":
            plain["members"] = {name: m.name for name, m in shape.members.items()}
            plain["required"] = list(shape.required_members)
            pending.extend(shape.members.values())
        elif shape.type_name == "list":
            plain["member"] = shape.member.name
            pending.append(shape.member)
        elif shape.type_name == "map":
            plain["value"] = shape.value.name
            pending.append(shape.value)
        elif getattr(shape, "enum", None):
            plain["enum"] = list(shape.enum)
        shapes[shape.name] = plain
    return shapes, root.name
