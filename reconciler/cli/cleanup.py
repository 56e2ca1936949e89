"""`reconciler cleanup`: the housekeeping a daemon does after a rollout, run by hand."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from reconciler.adapters.accounts import Account, account_of, session_for
from reconciler.adapters.housekeeping import Housekeeping
from reconciler.adapters.ports import HousekeepingPort, SchedulesPort
from reconciler.adapters.schedules import Schedules
from reconciler.app.stages.housekeeping import (
    clean_up,
    enabled,
    named_by_schedules_of,
    pinned_image,
    protected_by,
)
from reconciler.app.state import AppMemory
from reconciler.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    load,
    print_table,
    with_config,
)
from reconciler.cluster.admin import memories
from reconciler.config import AppConfig, Config
from reconciler.errors import ConfigError, ReconcilerError


def register(sub: Any) -> None:
    cleanup = sub.add_parser(
        "cleanup",
        help="deregister old task definitions and delete old images, as [apps.cleanup] says",
    )
    with_config(cleanup)
    cleanup.add_argument("--app")
    cleanup.add_argument("--dry-run", action="store_true", help="only list what would go")
    cleanup.set_defaults(func=cmd_cleanup)


def cmd_cleanup(args: argparse.Namespace) -> int:
    from reconciler import logs

    _, config = load(args)
    # The table goes to stdout; what is done on the way is logged to stderr.
    logs.configure(log_format="console", stream=sys.stderr)
    if args.app and args.app not in {a.name for a in config.apps}:
        raise CliError(f"unknown app {args.app!r}", EXIT_USAGE)
    rows = asyncio.run(cleanup_rows(config, [args.app] if args.app else [], dry_run=args.dry_run))
    print_table(rows, ["app", "action", "item", "detail"])
    failed = any(r["action"] == "error" or r["action"].endswith("failed") for r in rows)
    return EXIT_FAILURE if failed else EXIT_OK


async def cleanup_rows(
    config: Config, apps: Sequence[str] = (), *, dry_run: bool = False
) -> list[dict[str, str]]:
    """`reconciler cleanup`: clean the named apps (every app when none is named) and return
    printable rows (app, action, item, detail); a row whose action is "error" or ends in
    "failed" is a failure.

    Each app's calls go to its own region and account, as the daemon's do. A suspended app,
    or one whose state file cannot be read (its holds are unknown), is only reported on, as
    in a dry run.
    """
    known = {a.name: a for a in config.apps}
    unknown = [name for name in apps if name not in known]
    if unknown:
        raise ConfigError([f"unknown app {name!r}" for name in unknown])
    chosen = [known[name] for name in dict.fromkeys(apps)] if apps else list(config.apps)
    memory_of = await memories(config)
    endpoint_url = config.aws.endpoint_url
    rows: list[dict[str, str]] = []
    async with AsyncExitStack() as stack:
        opened: dict[Account, Housekeeping] = {}

        async def housekeeping_for(app: AppConfig) -> Housekeeping:
            account = account_of(app, default_region=config.aws.region)
            if account not in opened:
                opened[account] = await stack.enter_async_context(
                    Housekeeping.connect(
                        region=account.region,
                        endpoint_url=endpoint_url,
                        session=session_for(account, endpoint_url=endpoint_url),
                    )
                )
            return opened[account]

        for app in chosen:
            account = account_of(app, default_region=config.aws.region)
            # The task definitions the app's schedules name are kept (read with its identity).
            schedules = Schedules(
                region=account.region,
                endpoint_url=endpoint_url,
                session=session_for(account, endpoint_url=endpoint_url),
            )
            rows += await _rows_of(
                app, memory_of(app.name), housekeeping_for, schedules=schedules, dry_run=dry_run
            )
    return rows


async def _rows_of(
    app: AppConfig,
    memory: AppMemory,
    housekeeping_for: Callable[[AppConfig], Awaitable[HousekeepingPort]],
    *,
    schedules: SchedulesPort | None = None,
    dry_run: bool,
) -> list[dict[str, str]]:
    def row(action: str, detail: str) -> dict[str, str]:
        return {"app": app.name, "action": action, "item": "-", "detail": detail}

    if not enabled(app):
        return [row("off", "keep_task_definitions and keep_images are 0")]
    rows: list[dict[str, str]] = []
    if memory.damaged is not None:
        rows.append(row("error", f"only reported on: {memory.damaged}"))
    elif app.suspended and not dry_run:
        rows.append(row("dry run", "suspended: only reported on"))
    try:
        housekeeping = await housekeeping_for(app)
        services = [
            await housekeeping.service(cluster=app.cluster, service=name)
            for name in app.service_names
        ]
        protected = protected_by(memory)
        for arn, why in (await named_by_schedules_of(schedules, app.schedules, services)).items():
            protected.setdefault(arn, why)
        report = await clean_up(
            housekeeping,
            app=app,
            service=services[0],
            others=services[1:],
            protected=protected,
            referenced=pinned_image(app, memory),
            dry_run=dry_run or app.suspended or memory.damaged is not None,
        )
    except ReconcilerError as exc:
        return [*rows, row("error", str(exc))]
    return [*rows, *report.rows()]
