"""`reconciler render`, `diff` and `verify`: an app's definitions (SPEC 19) as the daemon
would deploy them, how live differs from them, and whether what they name exists. All read
only, with the app's own AWS identity (its region and role): git mirrors go to a scratch
directory, and nothing is written to AWS or state_dir.

    reconciler render APP [--revision REV]   the rendered files, as one JSON object by path
    reconciler render --from-live APP [--out DIR]   the live service as starting files
    reconciler diff APP                     `path: live -> desired` lines; none: exit 0
    reconciler verify APP [--revision REV]  one line per problem (exit 1), or `verified`
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import posixpath
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from reconciler.adapters.ports import Adapters
from reconciler.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, load, with_config
from reconciler.config import AppConfig, Config

# `diff` exits with this when live differs (as diff(1) does), `verify` when it found a
# problem; errors print `error:` lines.
EXIT_DIFFERS = 1


def register(sub: Any) -> None:
    render = sub.add_parser(
        "render", help="print an app's definitions rendered as the daemon would deploy them"
    )
    with_config(render)
    render.add_argument("app")
    render.add_argument("--revision", help="a commit SHA or tag (default: the desired revision)")
    render.add_argument(
        "--from-live",
        action="store_true",
        help="write the live task definition and service settings as starting files",
    )
    render.add_argument("--out", help="with --from-live: a folder to write the two files into")
    with_service(render)
    render.set_defaults(func=cmd_render)
    diff = sub.add_parser("diff", help="show how the live service differs from its definitions")
    with_config(diff)
    diff.add_argument("app")
    with_service(diff)
    diff.set_defaults(func=cmd_diff)
    verify = sub.add_parser(
        "verify",
        help="check that the roles, secrets, log groups... an app's definitions name exist",
    )
    with_config(verify)
    verify.add_argument("app")
    verify.add_argument("--revision", help="a commit SHA or tag (default: the desired revision)")
    with_service(verify)
    verify.set_defaults(func=cmd_verify)


def with_service(parser: Any) -> None:
    parser.add_argument(
        "--service", help="one service of an app of several (default: every one, in order)"
    )


def cmd_render(args: argparse.Namespace) -> int:
    config, app = _app(args)
    services = _services(app, args.service)
    if args.from_live:
        files = asyncio.run(_from_live(config, app, services))
        if args.out:
            return _write(Path(args.out), files, root=_starting_folder(app))
    else:
        _need_definitions(app)
        files = {}
        for service in services:
            files |= asyncio.run(_render(config, app, service, revision=args.revision))
    print(json.dumps(files, indent=2))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    config, app = _app(args)
    _need_definitions(app)
    lines: list[str] = []
    services = _services(app, args.service)
    for service in services:
        found = asyncio.run(_diff(config, app, service))
        lines += [f"{service}: {line}" if len(services) > 1 else line for line in found]
    for line in lines:
        print(line)
    return EXIT_DIFFERS if lines else EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    config, app = _app(args)
    _need_definitions(app)
    checks, lines = 0, []
    services = _services(app, args.service)
    for service in services:
        count, found = asyncio.run(_verify(config, app, service, revision=args.revision))
        checks += count
        lines += [f"{service}: {line}" if len(services) > 1 else line for line in found]
    for line in lines:
        print(line)
    if not lines:
        print(f"verified ({checks} checks)")
    return EXIT_DIFFERS if lines else EXIT_OK


def _app(args: argparse.Namespace) -> tuple[Config, AppConfig]:
    _, config = load(args)
    app = config.app(args.app)
    if app is None:
        raise CliError(f"unknown app {args.app!r}", EXIT_USAGE)
    return config, app


def _services(app: AppConfig, service: str | None) -> tuple[str, ...]:
    """The services a command is about: the one asked for, or every one of the app."""
    if service is None:
        return app.service_names
    if service not in app.service_names:
        names = ", ".join(app.service_names)
        raise CliError(f"app {app.name!r} has no service {service!r} (it has {names})", EXIT_USAGE)
    return (service,)


def _need_definitions(app: AppConfig) -> None:
    if not app.definitions:
        raise CliError(f"app {app.name!r} has no `definitions` folder", EXIT_USAGE)


@asynccontextmanager
async def _adapters(config: Config, app: AppConfig) -> AsyncIterator[Adapters]:
    """The adapters `app`'s passes use: its own account's ECS, ECR, lookups and verifier."""
    from reconciler.adapters.accounts import Account, Accounts, account_of
    from reconciler.daemon.root import open_adapters

    # Git mirrors go to a scratch directory: these commands write nothing, not even there.
    with tempfile.TemporaryDirectory(prefix="reconciler-render-") as scratch:
        daemon = config.daemon.model_copy(update={"state_dir": Path(scratch)})
        async with (
            open_adapters(config.model_copy(update={"daemon": daemon})) as opened,
            Accounts.open(
                endpoint_url=config.aws.endpoint_url, registry_override=config.aws.registry
            ) as accounts,
        ):
            io = opened
            account = account_of(app, default_region=config.aws.region)
            if account != Account(region=config.aws.region):
                ecs, ecr = await accounts.clients(account)
                io = dataclasses.replace(
                    opened,
                    ecs=ecs,
                    ecr=ecr,
                    lookups=accounts.lookups(account, env_allow=config.definitions.env_allow),
                    verifier=accounts.verifier(account),
                )
            yield io


async def _desired(
    config: Config, app: AppConfig, service: str, io: Adapters, *, revision: str | None
) -> Any:
    from reconciler.app.stages.definitions import desired_definition
    from reconciler.app.stages.observe import desired_of
    from reconciler.app.stages.release import for_service
    from reconciler.app.stages.resolve import resolve
    from reconciler.cluster.admin import memories

    if revision:
        app = app.model_copy(update={"revision": revision})
    resolved = await resolve(app, memory_of=await memories(config), git=io.git)
    desired = await desired_of(app, io, revision=resolved)
    return await desired_definition(
        for_service(app, service),
        git=io.git,
        lookups=io.lookups,
        revision=resolved,
        image=str(desired.image),
    )


async def _render(
    config: Config, app: AppConfig, service: str, *, revision: str | None
) -> dict[str, Any]:
    from reconciler.app.stages.definitions import definition_path
    from reconciler.app.stages.release import for_service
    from reconciler.decisions.definitions import SERVICE_FILE, TASK_FILE

    async with _adapters(config, app) as io:
        wanted = await _desired(config, app, service, io, revision=revision)
    scoped = for_service(app, service)
    files = {definition_path(scoped, TASK_FILE): wanted.task_definition}
    if wanted.service:
        files[definition_path(scoped, SERVICE_FILE)] = wanted.service
    return files


async def _verify(
    config: Config, app: AppConfig, service: str, *, revision: str | None
) -> tuple[int, list[str]]:
    from reconciler.app.stages.verify import verify

    async with _adapters(config, app) as io:
        wanted = await _desired(config, app, service, io, revision=revision)
        if io.verifier is None:
            raise CliError("no verifier opened", EXIT_FAILURE)
        return await verify(app, wanted, io.verifier)


async def _diff(config: Config, app: AppConfig, service: str) -> list[str]:
    from reconciler.app.stages.definitions import compared

    async with _adapters(config, app) as io:
        wanted = await _desired(config, app, service, io, revision=None)
        state = await io.ecs.describe_service(app.cluster, service)
        definition, tags = await io.ecs.task_definition(state.task_definition)
    # Everything compared, whoever registered it (no mark).
    found = compared(wanted, state, definition, tags, mark=None, heal=False)
    return [change.describe() for change in found.changes]


def _starting_folder(app: AppConfig) -> str:
    return app.definitions or "deploy/ecs"


async def _from_live(config: Config, app: AppConfig, services: tuple[str, ...]) -> dict[str, Any]:
    from reconciler.adapters.ecs_shapes import input_shapes
    from reconciler.app.stages.definitions import definition_path
    from reconciler.app.stages.observe import managed_images
    from reconciler.app.stages.release import for_service
    from reconciler.decisions.definitions import SERVICE_FILE, TASK_FILE, starting_files

    files: dict[str, Any] = {}
    named = app.model_copy(update={"definitions": _starting_folder(app)})
    async with _adapters(config, app) as io:
        for service in services:
            state = await io.ecs.describe_service(app.cluster, service)
            definition, tags = await io.ecs.task_definition(state.task_definition)
            shapes, root = input_shapes("RegisterTaskDefinition")
            task, settings = starting_files(
                definition,
                tags=tags,
                managed=set(managed_images(app, definition)),
                settings=state.settings,
                fields=shapes[root]["members"],
                ignore=app.ignore,
            )
            # With several services, one folder each, as the daemon reads them.
            scoped = for_service(named, service)
            files[definition_path(scoped, TASK_FILE)] = task
            files[definition_path(scoped, SERVICE_FILE)] = settings
    return files


def _write(folder: Path, files: dict[str, Any], *, root: str) -> int:
    """Write `files` (paths under the definitions folder `root`) into `folder`, keeping
    the services' subfolders."""
    targets = {
        folder / posixpath.relpath(path, posixpath.normpath(root)): document
        for path, document in files.items()
    }
    existing = [str(path) for path in targets if path.exists()]
    if existing:
        raise CliError(f"{existing[0]} exists; not overwritten", EXIT_FAILURE)
    for path, document in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(path)
    return EXIT_OK
