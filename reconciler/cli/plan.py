"""`reconciler plan`: desired against live and the action each app needs; writes nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    load,
    print_table,
    with_config,
)
from reconciler.config import Config
from reconciler.decisions.model import utcnow
from reconciler.errors import ReconcilerError


def register(sub: Any) -> None:
    plan = sub.add_parser(
        "plan", help="show desired vs live and the action each app needs; writes nothing"
    )
    with_config(plan)
    plan.add_argument("--app")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    _, config = load(args)
    apps = [a for a in config.apps if not args.app or a.name == args.app]
    if args.app and not apps:
        raise CliError(f"unknown app {args.app!r}", EXIT_USAGE)
    rows = asyncio.run(_plan_rows(config, apps))
    freezes = _freeze_rows(config, utcnow())
    if args.json:
        print(json.dumps({"apps": rows, "freezes": freezes}, indent=2))
    else:
        print_table(rows, ["app", "desired", "live", "action"])
        if freezes:
            print()
            print_table(freezes, ["freeze", "apps", "when", "now"])
    return EXIT_FAILURE if any(r.get("error") for r in rows) else EXIT_OK


async def _plan_rows(config: Config, apps: list[Any]) -> list[dict[str, Any]]:
    from reconciler.app.stages.observe import desired_of, observe
    from reconciler.app.stages.resolve import resolve
    from reconciler.cluster.admin import memories
    from reconciler.daemon.root import open_adapters
    from reconciler.decisions.model import Deploy
    from reconciler.decisions.plan import plan

    memory_of = await memories(config)
    rows: list[dict[str, Any]] = []
    # Git mirrors go to a scratch directory: `plan` writes nothing, not even to state_dir.
    with tempfile.TemporaryDirectory(prefix="reconciler-plan-") as scratch:
        daemon = config.daemon.model_copy(update={"state_dir": Path(scratch)})
        async with open_adapters(config.model_copy(update={"daemon": daemon})) as io:
            for app in apps:
                row: dict[str, Any] = {"app": app.name}
                try:
                    revision = await resolve(app, memory_of=memory_of, git=io.git)
                    desired = await desired_of(app, io, revision=revision)
                    obs = await observe(app, io, desired=desired, memory=memory_of(app.name))
                    action = plan(obs)
                    row.update(
                        desired=str(obs.desired.image),
                        revision=revision,
                        live=obs.live.image or "-",
                        task_definition=obs.live.task_definition,
                        action=_describe_action(action),
                    )
                    _say_frozen(row, action, config=config, app=app.name)
                    if app.releases_parts:
                        row["services"] = await _services(io, app)
                        rest = list(app.service_names[1:])
                        behind = [n for n in rest if row["services"][n] != row["desired"]]
                        if behind or isinstance(action, Deploy):
                            row["action"] += f"; then services: {', '.join(behind or rest)}"
                    if app.schedules:
                        row["schedules"] = await _schedules(io, app, obs.live.task_definition)
                        row["action"] += f"; then schedules: {', '.join(app.schedules)}"
                except ReconcilerError as exc:
                    row.update(desired="-", live="-", action=f"error: {exc}", error=str(exc))
                rows.append(row)
    return rows


def _say_frozen(row: dict[str, Any], action: object, *, config: Config, app: str) -> None:
    """A release a freeze keeps from starting is said as such (SPEC 21)."""
    from reconciler.decisions.freeze import covering
    from reconciler.decisions.model import Deploy

    found = covering(config.freeze_windows(), app, utcnow())
    if found is None:
        return
    row["frozen"] = {"reason": found.reason, "until": _when(found.until)}
    if isinstance(action, Deploy):
        row["action"] = f"nothing (frozen until {_when(found.until)}: {found.reason})"


def _freeze_rows(config: Config, now: datetime) -> list[dict[str, Any]]:
    """Each [[freeze]]: whom it covers, when, and whether it is in force now."""
    rows: list[dict[str, Any]] = []
    for freeze in config.freeze:
        window = freeze.window()
        end = window.end_of_window_covering(now)
        start = window.next_start(now)
        if end is not None:
            state = f"in force until {_when(end)}"
        else:
            state = f"next at {_when(start)}" if start else "no start within a year"
        rows.append(
            {
                "freeze": freeze.reason,
                "apps": " ".join(freeze.apps),
                "when": f"{freeze.cron} {freeze.timezone} for {window.duration}",
                "now": state,
                "until": _when(end) if end else None,
                "next_start": _when(start) if start else None,
            }
        )
    return rows


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


async def _services(io: Any, app: Any) -> dict[str, str]:
    """Each service of a release of several, with the image it runs now."""
    from reconciler.app.stages.observe import managed_images
    from reconciler.decisions.model import Live

    found: dict[str, str] = {}
    for service in app.service_names:
        state = await io.ecs.describe_service(app.cluster, service)
        definition, _ = await io.ecs.task_definition(state.task_definition)
        found[service] = Live(service=state, images=managed_images(app, definition)).image or "-"
    return found


async def _schedules(io: Any, app: Any, first: str) -> dict[str, str]:
    """Task definition -> the schedule naming it, for the targets a release would move
    (those of the app's families)."""
    from reconciler.app.stages.schedules import named_by_schedules
    from reconciler.decisions.schedules import family_of

    families = {family_of(first)} if first else set()
    for service in app.service_names[1:]:
        state = await io.ecs.describe_service(app.cluster, service)
        families.add(family_of(state.task_definition))
    return await named_by_schedules(io.schedules, app.schedules, families)


def _describe_action(action: object) -> str:
    from reconciler.decisions.model import (
        AwaitRollout,
        Deploy,
        FailedUnwatched,
        Held,
        InSync,
        Refused,
        ReportOnly,
        RollBack,
    )

    match action:
        case InSync():
            return "nothing (in sync)"
        case ReportOnly():
            return "nothing (suspended)"
        case Refused(reason=reason):
            return f"nothing (refused: {reason})"
        case Held(reason=reason):
            return f"nothing (held: {reason})"
        case RollBack(task_definition=td):
            return f"roll back to {td}"
        case FailedUnwatched(reason=reason):
            return f"nothing (hold: {reason})"
        case AwaitRollout(deployment_id=dep):
            return f"wait for rollout {dep}"
        case Deploy(build=True):
            return "build, push, deploy"
        case Deploy(build=False):
            return "deploy existing image"
    return repr(action)
