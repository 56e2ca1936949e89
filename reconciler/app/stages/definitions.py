"""Definitions as code (SPEC 19): the app's task definition and service settings, read from
its repository at the desired revision and rendered for the image the pass deploys.

The templates render in a thread (a slow template never stalls the event loop) and in
rounds: each lookup a round needs (env, ssm, secret_arn) is made through the app's
LookupsPort and the template rendered again, at most MAX_LOOKUPS times. Everything that is
wrong with the files is one DefinitionError line naming the file (and the JSON path).
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Mapping
from typing import Any

from reconciler.adapters.ecs_shapes import input_shapes
from reconciler.adapters.git import source_of
from reconciler.adapters.ports import GitPort, LookupsPort
from reconciler.config import AppConfig
from reconciler.decisions.definitions import (
    SERVICE_FILE,
    TASK_FILE,
    DesiredDefinition,
    definition_state,
    service_settings_of,
    task_definition_of,
)
from reconciler.decisions.model import DefinitionMark, DefinitionState, ServiceState
from reconciler.decisions.templates import NeedLookup, TemplateError, render_template
from reconciler.errors import DefinitionError

MAX_LOOKUPS = 64


def definition_path(app: AppConfig, name: str) -> str:
    """`name` inside the app's definitions folder, as a path of the repository."""
    return posixpath.normpath(posixpath.join(app.definitions, name))


async def desired_definition(
    app: AppConfig, *, git: GitPort, lookups: LookupsPort | None, revision: str, image: str
) -> DesiredDefinition | None:
    """The rendered, checked definition of `revision` deploying `image`; None without
    `definitions`."""
    if not app.definitions:
        return None
    task_file = definition_path(app, TASK_FILE)
    service_file = definition_path(app, SERVICE_FILE)
    task_text = await _read(app, git, revision=revision, path=task_file)
    if task_text is None:
        raise DefinitionError(f"{task_file}: not found in commit {revision[:12]}")
    service_text = await _read(app, git, revision=revision, path=service_file)
    values = {"app": app.name, "revision": revision, "image": image}
    shapes, task_root = input_shapes("RegisterTaskDefinition")
    definition, managed = task_definition_of(
        await render(task_text, file=task_file, values=values, lookups=lookups),
        file=task_file,
        shapes=shapes,
        root=task_root,
        image=image,
        containers=app.containers,
        repository=app.ecr_repository,
    )
    service = {}
    if service_text is not None:
        service_shapes, service_root = input_shapes("UpdateService")
        service = service_settings_of(
            await render(service_text, file=service_file, values=values, lookups=lookups),
            file=service_file,
            shapes=service_shapes,
            root=service_root,
            ignore=app.ignore,
        )
    return DesiredDefinition(task_definition=definition, service=service, managed=managed)


def compared(
    wanted: DesiredDefinition,
    service: ServiceState,
    live_definition: Mapping[str, Any],
    live_tags: list[Any],
    *,
    mark: DefinitionMark | None,
    heal: bool,
) -> DefinitionState:
    """How the live service and its task definition differ from `wanted`, over the fields
    RegisterTaskDefinition takes (from the AWS SDK's model)."""
    shapes, root = input_shapes("RegisterTaskDefinition")
    return definition_state(
        wanted,
        live_definition=live_definition,
        live_tags=live_tags,
        live_arn=service.task_definition,
        live_settings=service.settings,
        mark=mark,
        fields=shapes[root]["members"],
        heal=heal,
    )


async def render(
    text: str, *, file: str, values: dict[str, str], lookups: LookupsPort | None
) -> str:
    """`text` rendered, its lookups made through `lookups`."""
    found: dict[tuple[str, str], str] = {}
    while True:
        try:
            return await asyncio.to_thread(
                render_template, text, file=file, values=values, lookups=dict(found)
            )
        except NeedLookup as need:
            if lookups is None:
                raise DefinitionError(f"{file}: {need.function}() is not available here") from None
            if len(found) >= MAX_LOOKUPS:
                raise DefinitionError(f"{file}: more than {MAX_LOOKUPS} lookups") from None
            try:
                found[(need.function, need.name)] = await lookups.look_up(need.function, need.name)
            except DefinitionError as exc:
                raise DefinitionError(f"{file}: {exc}") from exc
        except TemplateError as exc:
            raise DefinitionError(str(exc)) from exc


async def _read(app: AppConfig, git: GitPort, *, revision: str, path: str) -> str | None:
    raw = await git.read_file(source_of(app), commit=revision, path=path)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
