"""Observe: everything the planner needs, read from ECS, the registry and the app's memory.

Reads only, never writes: the `plan` command uses this to show what a pass would do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.adapters.ports import Adapters
from reconciler.app.stages.definitions import compared
from reconciler.app.state import AppMemory
from reconciler.config import AppConfig
from reconciler.decisions.definitions import DesiredDefinition
from reconciler.decisions.model import Desired, ImageRef, Live, Observation, image_repository
from reconciler.errors import ManifestError


def managed_images(app: AppConfig, definition: Mapping[str, Any]) -> dict[str, str]:
    """The containers whose image this app manages, with their current image."""
    containers = definition.get("containerDefinitions") or []
    if app.containers:
        images = {
            c["name"]: str(c.get("image", ""))
            for c in containers
            if c.get("name") in app.containers
        }
        missing = sorted(set(app.containers) - set(images))
        if missing:
            raise ManifestError(
                f"task definition {definition.get('family')} has no container named "
                f"{', '.join(missing)}"
            )
        return images
    images = {
        c["name"]: str(c.get("image", ""))
        for c in containers
        if image_repository(str(c.get("image", ""))) == app.ecr_repository
    }
    if not images:
        raise ManifestError(
            f"no container of task definition {definition.get('family')} uses repository "
            f"{app.ecr_repository!r}; name the managed ones in `containers`"
        )
    return images


async def desired_of(app: AppConfig, io: Adapters, *, revision: str) -> Desired:
    registry = await io.ecr.registry()
    return Desired(revision=revision, image=ImageRef(registry, app.ecr_repository, revision))


async def observe(
    app: AppConfig,
    io: Adapters,
    *,
    desired: Desired,
    memory: AppMemory,
    unwritable: str | None = None,
    max_age: float = 0.0,
    wanted: DesiredDefinition | None = None,
) -> Observation:
    """With `max_age`, a DescribeServices answer up to that many seconds old will do; with
    `wanted` (an app with `definitions`), live is compared with it."""
    service = await io.ecs.describe_service(app.cluster, app.service, max_age=max_age)
    definition, tags = await io.ecs.task_definition(service.task_definition)
    live = Live(service=service, images=managed_images(app, definition))
    state = None
    if wanted is not None:
        state = compared(
            wanted, service, definition, tags, mark=memory.definition, heal=app.drift == "heal"
        )
    image_in_registry: bool | None = None
    if not live.runs(desired.image):
        image_in_registry = await io.registry.has_tag(
            registry=desired.image.registry,
            repository=app.ecr_repository,
            tag=desired.revision,
            auth=await io.ecr.auth(),
        )
    return Observation(
        desired=desired,
        live=live,
        image_in_registry=image_in_registry,
        hold=memory.hold,
        attempt=memory.attempt,
        build_failures=memory.build_failures.get(desired.revision, 0),
        suspended=app.suspended,
        config_fingerprint=app.fingerprint(),
        state_damaged=memory.damaged,
        state_unwritable=unwritable,
        definition=state,
    )
