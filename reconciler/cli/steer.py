"""`reconciler sync`, `rollback`, `unpin`, `approve` and `reject`: an operator steering one
app."""

from __future__ import annotations

import argparse
from typing import Any

from reconciler.cli.client import steer, waiting_approval, with_daemon
from reconciler.cli.common import EXIT_OK, EXIT_USAGE, CliError


def register(sub: Any) -> None:
    sync = sub.add_parser("sync", help="start a pass now and clear a Failed hold")
    sync.add_argument("app")
    sync.add_argument(
        "--override-freeze",
        action="store_true",
        help="let one release through a freeze window (admin; needs --reason; audited)",
    )
    sync.add_argument("--reason", help="why the freeze is overridden (kept in the audit log)")
    rollback = sub.add_parser(
        "rollback", help="deploy an earlier successful revision now and keep it until unpin"
    )
    rollback.add_argument("app")
    rollback.add_argument("--to", help="the revision (full or short SHA); default: the one before")
    unpin = sub.add_parser("unpin", help="end a rollback pin: follow git again")
    unpin.add_argument("app")
    votes = []
    for verb, said in (("approve", "approve"), ("reject", "reject (and hold)")):
        vote = sub.add_parser(verb, help=f"{said} the release of APP waiting for approval")
        vote.add_argument("app")
        vote.add_argument(
            "--revision", help="the revision (full or short SHA); default: the one waiting now"
        )
        vote.add_argument("--comment", default="", help="kept in the audit log and the status")
        votes.append((vote, cmd_approve if verb == "approve" else cmd_reject))
    for command, func in (
        (sync, cmd_sync),
        (rollback, cmd_rollback),
        (unpin, cmd_unpin),
        *votes,
    ):
        with_daemon(command)
        command.set_defaults(func=func)


def cmd_sync(args: argparse.Namespace) -> int:
    if args.reason is not None and not args.override_freeze:
        raise CliError("--reason goes with --override-freeze", EXIT_USAGE)
    if not args.override_freeze:
        steer(args, "sync")
        print(f"sync of {args.app} started")
        return EXIT_OK
    if not (args.reason or "").strip():
        raise CliError(
            "--override-freeze needs --reason TEXT (it goes in the audit log)", EXIT_USAGE
        )
    steer(args, "sync", {"override_freeze": True, "reason": args.reason})
    print(f"sync of {args.app} started; one release may go through the freeze")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    answer = steer(args, "rollback", {"revision": args.to} if args.to else {})
    print(f"{args.app} pinned to {answer['pinned']} (until `reconciler unpin {args.app}`)")
    return EXIT_OK


def cmd_unpin(args: argparse.Namespace) -> int:
    answer = steer(args, "unpin")
    said = "back to following git" if answer.get("unpinned") else "was not pinned"
    print(f"{args.app}: {said}")
    return EXIT_OK


def cmd_approve(args: argparse.Namespace) -> int:
    answer = _vote(args, "approve")
    have, needed = len(answer.get("approvals") or []), answer.get("required")
    state = "approved: it goes out now" if answer.get("approved") else f"{have} of {needed}"
    print(f"{args.app} {answer['revision'][:12]} ({answer['digest']}): {state}")
    return EXIT_OK


def cmd_reject(args: argparse.Namespace) -> int:
    answer = _vote(args, "reject")
    print(f"{args.app} {answer['revision'][:12]} rejected: held until a newer revision or sync")
    return EXIT_OK


def _vote(args: argparse.Namespace, verb: str) -> Any:
    body: dict[str, str] = {"comment": args.comment}
    if args.revision:
        body["revision"] = args.revision
    else:
        # Bound to what waits now, digest included: never a release that turned up unseen.
        waiting = waiting_approval(args)
        body["revision"], body["digest"] = waiting["revision"], waiting["digest"]
    return steer(args, verb, body)
