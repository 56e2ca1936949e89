"""The desired task definition and service settings of an app with `definitions` (SPEC 19),
from its rendered files: parsed, checked against the ECS API's input shapes, the managed
containers' image forced to the deployed one, the ignored service fields dropped.

Pure: the text comes rendered (templates.py), the shapes as plain data (shapes.py).
Every problem is a DefinitionError of one line naming the file and the JSON path.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.decisions.definition_diff import (
    RESERVED_TAG_PREFIX,
    service_changes,
    strip_filled,
    task_definition_changes,
)
from reconciler.decisions.model import DefinitionMark, DefinitionState, image_repository
from reconciler.decisions.service_fields import SERVICE_FIELDS
from reconciler.decisions.shapes import Shapes, check_shape
from reconciler.errors import DefinitionError

TASK_FILE = "task-definition.json"
SERVICE_FILE = "service.json"


@dataclass(frozen=True)
class DesiredDefinition:
    """What the app's files say the service should be, at one revision and image."""

    task_definition: Mapping[str, Any]  # RegisterTaskDefinition's input, tags included
    service: Mapping[str, Any]  # UpdateService settings the app owns, ignored ones dropped
    managed: tuple[str, ...]  # the containers whose image is the deployed one

    @property
    def fingerprint(self) -> str:
        """Changes whenever anything registered or sent would change."""
        seed = json.dumps([self.task_definition, self.service], sort_keys=True, default=str)
        return hashlib.sha256(seed.encode()).hexdigest()[:16]


def parse_json(text: str, *, file: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DefinitionError(
            f"{file}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"
        ) from exc


def task_definition_of(
    text: str,
    *,
    file: str,
    shapes: Shapes,
    root: str,
    image: str,
    containers: Collection[str],
    repository: str,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The task definition `text` holds, with the managed containers' image set to `image`;
    and the names of those containers. `containers` names them (the app's `containers`);
    empty: those whose image is in `repository`."""
    document = parse_json(text, file=file)
    problem = check_shape(document, shapes, root)
    if problem:
        raise DefinitionError(f"{file}: {problem}")
    definition: dict[str, Any] = copy.deepcopy(document)
    listed = definition.get("containerDefinitions") or []
    names = [str(c.get("name", "")) for c in listed]
    if containers:
        missing = [name for name in containers if name not in names]
        if missing:
            raise DefinitionError(f"{file}: containerDefinitions: no container named {missing[0]}")
        managed = tuple(name for name in names if name in containers)
    else:
        managed = tuple(
            str(c.get("name", ""))
            for c in listed
            if image_repository(str(c.get("image", ""))) == repository
        )
        if not managed:
            raise DefinitionError(
                f"{file}: containerDefinitions: no container's image is in repository"
                f" {repository!r}; set its image to {{{{ image }}}} or name it in `containers`"
            )
    for container in listed:
        if container.get("name") in managed:
            container["image"] = image
    return definition, managed


def service_settings_of(
    text: str, *, file: str, shapes: Shapes, root: str, ignore: Collection[str]
) -> dict[str, Any]:
    """The service settings `text` holds, checked against UpdateService's input where
    limited to the fields an app may own; the `ignore`d ones dropped (never sent)."""
    document = parse_json(text, file=file)
    if isinstance(document, dict):
        for key in document:
            if key in shapes[root]["members"] and key not in SERVICE_FIELDS:
                raise DefinitionError(
                    f"{file}: {key}: not a setting service.json may hold; it holds"
                    f" {', '.join(SERVICE_FIELDS)}"
                )
    owned = _owned_shape(shapes, root)
    problem = check_shape(document, owned, "ServiceSettings")
    if problem:
        raise DefinitionError(f"{file}: {problem}")
    return {key: value for key, value in document.items() if key not in ignore}


def _owned_shape(shapes: Shapes, root: str) -> dict[str, Mapping[str, Any]]:
    members = shapes[root]["members"]
    owned = {"type": "structure", "members": {k: members[k] for k in SERVICE_FIELDS}}
    return {**shapes, "ServiceSettings": owned}


def definition_state(
    desired: DesiredDefinition,
    *,
    live_definition: Mapping[str, Any],
    live_tags: list[Any],
    live_arn: str,
    live_settings: Mapping[str, Any],
    mark: DefinitionMark | None,
    fields: Collection[str],
    heal: bool,
) -> DefinitionState:
    """How what runs differs from `desired`. The task definition a mark of this very
    definition names is the definition (ARNs are immutable): only the service's settings
    are compared then, so no quirk of a comparison can make the daemon deploy in a loop."""
    fingerprint = desired.fingerprint
    ours = mark is not None and mark.fingerprint == fingerprint
    changes = []
    if not (ours and mark is not None and mark.task_definition == live_arn):
        changes = task_definition_changes(
            desired.task_definition, live_definition, live_tags=live_tags, fields=fields
        )
    changes.extend(service_changes(desired.service, live_settings))
    return DefinitionState(fingerprint, tuple(changes), deployed=ours, heal=heal)


def starting_files(
    live: Mapping[str, Any],
    *,
    tags: list[Any],
    managed: Collection[str],
    settings: Mapping[str, Any],
    fields: Collection[str],
    ignore: Collection[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The live task definition and service settings as files to start `definitions` from:
    only what RegisterTaskDefinition takes, nothing ECS fills in, the managed containers'
    image `{{ image }}`, the daemon's own tags left out, the `ignore`d settings too."""
    task = {k: copy.deepcopy(v) for k, v in live.items() if k in fields}
    for container in task.get("containerDefinitions") or []:
        if container.get("name") in managed:
            container["image"] = "{{ image }}"
    kept = [t for t in tags if not str(t.get("key", "")).startswith(RESERVED_TAG_PREFIX)]
    if kept:
        task["tags"] = kept
    service = {k: copy.deepcopy(v) for k, v in settings.items() if k not in ignore}
    return strip_filled(task), strip_filled(service)
