"""The `reconciler` command: run, validate, plan, status, history, report, sync, rollback,
unpin, audit, cleanup, cluster, token, sandbox; one module of this package per group.

Errors are one line on stderr and a non-zero exit, never a traceback: 2 for bad input
(config, arguments), 1 for a failure to reach the daemon or AWS.
"""

from __future__ import annotations

import argparse
import sys

from reconciler import __version__
from reconciler.cli import (
    audit,
    cleanup,
    cluster,
    definitions,
    plan,
    report,
    run,
    sandbox,
    status,
    steer,
    token,
)
from reconciler.cli.common import EXIT_FAILURE, EXIT_USAGE, CliError
from reconciler.errors import ReconcilerError

GROUPS = (run, plan, definitions, status, report, steer, audit, cleanup, cluster, token, sandbox)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="reconciler", description="Keep ECS services on the image built from a git revision."
    )
    top.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # What follows the first `--` is a command to run (`reconciler run APP -- COMMAND...`),
    # never parsed as options of ours.
    head, dashes, tail = _split(argv)
    args = parser().parse_args(head)
    if dashes:
        if getattr(args, "task_command", False) is False:
            print(f"error: {args.command} takes no `--`", file=sys.stderr)
            return EXIT_USAGE
        args.task_command = tail
    try:
        return int(args.func(args))
    except CliError as exc:
        if str(exc):
            print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except ReconcilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        # An operator gets one line, not a traceback; `run` logs its crashes in full itself.
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _split(argv: list[str]) -> tuple[list[str], bool, list[str]]:
    if "--" not in argv:
        return argv, False, []
    at = argv.index("--")
    return argv[:at], True, argv[at + 1 :]


if __name__ == "__main__":
    sys.exit(main())
