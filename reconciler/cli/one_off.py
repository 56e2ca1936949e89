"""`reconciler run APP [--service S] [--container C] [--timeout T] -- COMMAND...`: a one-off
task of the app's live task definition, run with the caller's own AWS credentials.

`reconciler run` without APP runs the daemon, as it always did; an APP argument makes it a
one-off task. The command's exit code is the container's; 1 when the task did not run to an
exit code (never started, stopped at the timeout) or AWS refused; 2 for bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from reconciler.aio.backoff import Timings
from reconciler.cli.common import EXIT_FAILURE, EXIT_USAGE, CliError, load
from reconciler.config import AppConfig, Config
from reconciler.decisions.durations import parse_duration
from reconciler.errors import ConfigError


def cmd_one_off(args: argparse.Namespace) -> int:
    command = list(args.task_command or ())
    if not command or not command[0].strip():
        raise CliError(f"no command: reconciler run {args.app} -- COMMAND...", EXIT_USAGE)
    timeout = _timeout(args.timeout)
    _, config = load(args)
    app = config.app(args.app)
    if app is None:
        raise CliError(f"unknown app {args.app!r}", EXIT_USAGE)
    return asyncio.run(
        _run(
            config,
            app,
            command=command,
            service=args.service,
            container=args.container,
            stop_after=timeout,
        )
    )


def _timeout(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(parse_duration(value))
    except ValueError as exc:
        raise CliError(f"--timeout: {exc}", EXIT_USAGE) from exc
    if seconds <= 0:
        raise CliError("--timeout must be more than 0", EXIT_USAGE)
    return seconds


async def _run(
    config: Config,
    app: AppConfig,
    *,
    command: list[str],
    service: str | None,
    container: str | None,
    stop_after: float | None,
) -> int:
    from reconciler.adapters.accounts import account_of, session_for
    from reconciler.adapters.ecs import Ecs
    from reconciler.app import one_off

    try:
        one_off.service_of(app, service)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    account = account_of(app, default_region=config.aws.region)
    endpoint = config.aws.endpoint_url
    session = session_for(account, endpoint_url=endpoint)
    async with Ecs.connect(region=account.region, endpoint_url=endpoint, session=session) as ecs:
        run = await one_off.start(ecs, app, command=command, service=service, container=container)
        print(
            f"started {run.task} of {run.task_definition} (container {run.container})",
            flush=True,
        )
        print(f"logs: {run.logs or 'the container does not log to CloudWatch (awslogs)'}")
        try:
            ended = await one_off.await_end(
                ecs, run, stop_after=stop_after, polls=Timings().rollout_polls
            )
        except asyncio.CancelledError:
            # Interrupted: the task may be half-way through (a migration); it is the
            # operator's to stop, not ours.
            print(f"not waiting any more; {run.task} is left running", file=sys.stderr)
            raise
    if ended.reason:
        print(f"error: {ended.reason}", file=sys.stderr)
    print(f"exit {ended.exit_code if ended.exit_code is not None else '-'}")
    return ended.exit_code if ended.exit_code is not None else EXIT_FAILURE
