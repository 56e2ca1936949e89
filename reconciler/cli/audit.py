"""`reconciler audit [--app NAME]`: who changed what on the daemon, accepted or refused."""

from __future__ import annotations

import argparse
import json
from typing import Any

from reconciler.cli.client import read, with_daemon
from reconciler.cli.common import EXIT_OK, print_table


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit log: every state change asked for, and how")
    audit.add_argument("--app")
    with_daemon(audit)
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    body = read(args, "/audit", {"app": args.app})
    entries = body.get("entries", [])
    if args.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    rows = [
        {
            "time": e.get("time", ""),
            "identity": f"{e.get('identity')} ({e.get('role')}, {e.get('via')})",
            "action": e.get("action", ""),
            "app": e.get("app") or "-",
            "result": e.get("result", ""),
        }
        for e in entries
    ]
    print_table(rows, ["time", "identity", "action", "app", "result"])
    return EXIT_OK
