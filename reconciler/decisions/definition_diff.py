"""Desired against live, with nothing ECS adds or fills in counted as a difference.

A task definition read back from ECS carries what nobody wrote: its ARN, revision, status,
registeredAt/By, compatibilities, requiresAttributes, empty lists, and defaults such as a
container's `essential: true` or a port mapping's `protocol: "tcp"`. Both sides are brought
to one normal form (only the fields RegisterTaskDefinition takes; no nulls, empty lists or
objects; no default values), lists whose order means nothing (environment, secrets, port
mappings, ...) become objects keyed by what names their items, and the two are compared
leaf by leaf. A change is a path (`containerDefinitions[web].environment[LOG_LEVEL]`) with
the desired and the live value (None where absent).

Service settings are compared only where service.json says something: a field or sub-field
it leaves out is someone else's (ECS's defaults, autoscaling, Terraform).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.decisions.housekeeping import APP_TAG

RESERVED_TAG_PREFIX = "reconciler:"

# Values ECS fills in when a field is left out; equal to the default is equal to absent.
_TOP_DEFAULTS: dict[str, Any] = {"networkMode": "bridge", "enableFaultInjection": False}
_CONTAINER_DEFAULTS: dict[str, Any] = {
    "essential": True,
    "cpu": 0,
    "versionConsistency": "enabled",
    "interactive": False,
    "pseudoTerminal": False,
}
_HEALTH_DEFAULTS: dict[str, Any] = {"interval": 30, "timeout": 5, "retries": 3, "startPeriod": 0}
_PORT_DEFAULTS: dict[str, Any] = {"protocol": "tcp"}
_VOLUME_DEFAULTS: dict[str, Any] = {"configuredAtLaunch": False}
_EFS_DEFAULTS: dict[str, Any] = {"rootDirectory": "/", "transitEncryption": "DISABLED"}

# Lists whose order ECS does not care about, and what names an item of each.
_TOP_SETS = {
    "containerDefinitions": ("name",),
    "volumes": ("name",),
    "placementConstraints": ("type", "expression"),
    "requiresCompatibilities": (),
    "tags": ("key",),
    "inferenceAccelerators": ("deviceName",),
}
_CONTAINER_SETS = {
    "environment": ("name",),
    "secrets": ("name",),
    "portMappings": ("containerPort", "protocol"),
    "environmentFiles": ("value",),
    "mountPoints": ("containerPath",),
    "volumesFrom": ("sourceContainer",),
    "ulimits": ("name",),
    "systemControls": ("namespace",),
    "extraHosts": ("hostname",),
    "dependsOn": ("containerName",),
    "links": (),
    "dockerSecurityOptions": (),
    "resourceRequirements": ("type",),
}


@dataclass(frozen=True)
class Change:
    path: str
    desired: Any  # None: absent from the desired side
    live: Any  # None: absent from what runs

    def describe(self) -> str:
        """`path: live -> desired`, values as JSON."""
        return f"{self.path}: {_show(self.live)} -> {_show(self.desired)}"


def task_definition_changes(
    desired: Mapping[str, Any],
    live: Mapping[str, Any],
    *,
    live_tags: list[Any],
    fields: Collection[str],
) -> list[Change]:
    """What registering `desired` would change of the `live` task definition."""
    live_doc = dict(live)
    if "tags" in desired:
        live_doc["tags"] = [t for t in live_tags if not _reserved(t)]
    else:
        live_doc.pop("tags", None)
    wanted = {k: v for k, v in desired.items() if k != "tags" or v}
    if "tags" in wanted:
        wanted["tags"] = [t for t in wanted["tags"] if not _reserved(t)]
    return _changes(
        normal_task_definition(wanted, fields), normal_task_definition(live_doc, fields)
    )


def service_changes(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[Change]:
    """What sending `desired` to UpdateService would change of the `live` service."""
    changes: list[Change] = []
    _compare_within(_clean(dict(desired)), _clean(dict(live)), "", changes)
    return changes


def normal_task_definition(doc: Mapping[str, Any], fields: Collection[str]) -> dict[str, Any]:
    """`doc` with only the fields of `fields` (RegisterTaskDefinition's), no empties and no
    defaults, unordered lists keyed by their items' names."""
    kept = {k: v for k, v in doc.items() if k in fields}
    network = str(kept.get("networkMode") or "bridge")
    containers = [_container(dict(c), network) for c in kept.get("containerDefinitions") or []]
    if containers:
        kept["containerDefinitions"] = containers
    kept["volumes"] = [_volume(dict(v)) for v in kept.get("volumes") or []]
    kept = _without_defaults(kept, _TOP_DEFAULTS)
    cleaned: dict[str, Any] = _clean(_keyed(kept, _TOP_SETS))
    return cleaned


def strip_filled(doc: Mapping[str, Any]) -> dict[str, Any]:
    """`doc` without nulls and empty lists or objects (what ECS answers with, unasked)."""
    cleaned: dict[str, Any] = _clean(dict(doc))
    return cleaned


def _container(container: dict[str, Any], network: str) -> dict[str, Any]:
    container = _without_defaults(container, _CONTAINER_DEFAULTS)
    if isinstance(container.get("healthCheck"), dict):
        container["healthCheck"] = _without_defaults(container["healthCheck"], _HEALTH_DEFAULTS)
    container["portMappings"] = [
        _port(dict(p), network) for p in container.get("portMappings") or []
    ]
    return _keyed(container, _CONTAINER_SETS)


def _port(mapping: dict[str, Any], network: str) -> dict[str, Any]:
    mapping = _without_defaults(mapping, _PORT_DEFAULTS)
    host = mapping.get("hostPort")
    # awsvpc and host networking publish the container's port itself; bridge's 0 is dynamic.
    if host == 0 or (network in {"awsvpc", "host"} and host == mapping.get("containerPort")):
        mapping.pop("hostPort", None)
    return mapping


def _volume(volume: dict[str, Any]) -> dict[str, Any]:
    volume = _without_defaults(volume, _VOLUME_DEFAULTS)
    efs = volume.get("efsVolumeConfiguration")
    if isinstance(efs, dict):
        volume["efsVolumeConfiguration"] = _without_defaults(efs, _EFS_DEFAULTS)
    return volume


def _without_defaults(doc: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not (k in defaults and v == defaults[k])}


def _keyed(doc: dict[str, Any], sets: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """The lists of `sets` turned into objects keyed by what names their items."""
    out = dict(doc)
    for key, naming in sets.items():
        items = out.get(key)
        if isinstance(items, list):
            out[key] = {f"[{_label(item, naming)}]": item for item in items}
    return out


def _label(item: Any, naming: tuple[str, ...]) -> str:
    if isinstance(item, dict) and naming and all(n in item for n in naming[:1]):
        parts = [str(item[n]) for n in naming if n in item and n != "protocol"]
        if "protocol" in naming:
            parts.append(str(item.get("protocol", "tcp")))
        return "/".join(parts)
    return json.dumps(item, sort_keys=True)


def _clean(value: Any) -> Any:
    """No nulls, no empty lists or objects, at any depth."""
    if isinstance(value, dict):
        cleaned = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v is not None and v not in ([], {})}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _changes(desired: Any, live: Any, path: str = "") -> list[Change]:
    if isinstance(desired, dict) and isinstance(live, dict):
        changes: list[Change] = []
        for key in sorted(set(desired) | set(live), key=str):
            changes.extend(_changes(desired.get(key), live.get(key), _join(path, str(key))))
        return changes
    if desired == live:
        return []
    return [Change(path, desired, live)]


def _compare_within(desired: Any, live: Any, path: str, changes: list[Change]) -> None:
    """Compare only what `desired` says: a key it leaves out is not compared."""
    if isinstance(desired, dict) and isinstance(live, dict):
        for key in sorted(desired, key=str):
            _compare_within(desired[key], live.get(key), _join(path, str(key)), changes)
        return
    if isinstance(desired, list) and isinstance(live, list):
        if _as_set(desired) != _as_set(live):
            changes.append(Change(path, desired, live))
        return
    if desired != live:
        changes.append(Change(path, desired, live))


def _as_set(items: list[Any]) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True, default=str) for item in items)


def _reserved(tag: Any) -> bool:
    return isinstance(tag, dict) and (
        tag.get("key") == APP_TAG or str(tag.get("key", "")).startswith(RESERVED_TAG_PREFIX)
    )


def _join(path: str, key: str) -> str:
    if key.startswith("["):  # an item of an unordered list, by what names it
        return f"{path}{key}"
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    return json.dumps(value, sort_keys=True, default=str)
