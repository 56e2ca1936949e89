"""`reconciler run` and `reconciler validate`: the daemon in the foreground (or, given an
APP, a one-off task of it: cli/one_off.py), a config checked."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any

from reconciler.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, load, with_config
from reconciler.errors import HostIdInUse, ReconcilerError

THREAD_GRACE = 1.0  # after the daemon stopped, worker threads get this long to return


def register(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run the daemon; with APP -- COMMAND..., a one-off task of the app",
        usage="%(prog)s [--config PATH] [APP [--service S] [--container C] [--timeout T]"
        " -- COMMAND...]",
    )
    with_config(run)
    run.add_argument("app", nargs="?", help="a one-off task of this app instead of the daemon")
    run.add_argument("--service", help="the service whose task definition and launch to use")
    run.add_argument("--container", help="the container COMMAND runs in (default: managed)")
    run.add_argument("--timeout", help="stop the task after this long (default: wait)")
    # COMMAND is what follows `--` (main.py splits it off before parsing).
    run.set_defaults(func=cmd_run, task_command=None)
    validate = sub.add_parser("validate", help="check a config file")
    with_config(validate)
    validate.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    path, config = load(args)
    print(
        f"{path}: valid, {len(config.apps)} app(s): {', '.join(a.name for a in config.apps) or '-'}"
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    if args.app is not None:
        from reconciler.cli.one_off import cmd_one_off

        return cmd_one_off(args)
    task_only = [f"--{k}" for k in ("service", "container", "timeout") if getattr(args, k)]
    if task_only or args.task_command is not None:
        raise CliError(
            f"{' '.join(task_only) or 'COMMAND'} needs an APP: reconciler run APP -- COMMAND...",
            EXIT_USAGE,
        )
    from reconciler import logs
    from reconciler.daemon.root import Daemon

    path, config = load(args)
    logs.configure(log_format=config.daemon.log_format)
    daemon = Daemon(config=config, config_path=path)
    try:
        _run_until_complete(daemon.run())
    except HostIdInUse as exc:
        # Exit 2 like a bad config: systemd does not restart it (RestartPreventExitStatus).
        logs.get_logger().critical("daemon_failed", error=str(exc))
        return EXIT_USAGE
    except ReconcilerError as exc:
        logs.get_logger().critical("daemon_failed", error=str(exc))
        return EXIT_FAILURE
    except Exception:
        logs.get_logger().critical("daemon_crashed", exc_info=True)
        return EXIT_FAILURE
    _exit_now_if_threads_hang(EXIT_OK)
    return EXIT_OK


def _run_until_complete(main: Coroutine[Any, Any, None]) -> None:
    """Like asyncio.run(), but without waiting for the default executor's threads.

    asyncio.run() joins every worker thread before it returns. A git fetch blocked on a
    silent server holds one for up to the socket timeout, far past the 10 s a stop may take.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        try:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()  # shuts the executor down with wait=False


def _exit_now_if_threads_hang(code: int) -> None:
    """Exit at once if worker threads are still busy after a short grace.

    The interpreter would otherwise join them at exit; everything they could still do is
    abandoned work of a stopped daemon (the next start observes afresh).
    """
    me = threading.current_thread()
    busy = [t for t in threading.enumerate() if t is not me and not t.daemon]
    deadline = time.monotonic() + THREAD_GRACE
    for thread in busy:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in busy if t.is_alive()]
    if hung:
        from reconciler import logs

        logs.get_logger().warning("exiting_with_busy_threads", threads=hung)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
