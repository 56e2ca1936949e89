"""`reconciler report`: the four keys per app and over all, as the daemon computes them
(GET /report); a table, or the daemon's JSON with --json."""

from __future__ import annotations

import argparse
import json
from typing import Any

from reconciler.cli.client import read, with_daemon
from reconciler.cli.common import EXIT_OK, print_table

COLUMNS = ["app", "days", "deploys", "per_day", "lead_p50", "lead_p90", "fail_rate", "restore_p50"]


def register(sub: Any) -> None:
    command = sub.add_parser(
        "report", help="the four keys: deployment frequency, lead time, failure rate, restore"
    )
    command.add_argument("--app", help="one app (default: each app and all together)")
    command.add_argument("--days", type=int, help="one window of N days (default: 7 and 30)")
    with_daemon(command)
    command.add_argument("--json", action="store_true")
    command.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    body = read(args, "/report", {"app": args.app, "days": args.days})
    if args.json:
        print(json.dumps(body, indent=2))
        return EXIT_OK
    rows = []
    for window in body.get("windows", []):
        scopes = dict(window.get("per_app", {}))
        if args.app is None:
            scopes["(all)"] = window["all"]
        for name, keys in scopes.items():
            rows.append(row(name, keys))
    print_table(rows, COLUMNS)
    return EXIT_OK


def row(name: str, keys: dict[str, Any]) -> dict[str, str]:
    lead = keys.get("lead_time_seconds") or {}
    rate = keys.get("change_failure_rate")
    unrestored = keys.get("unrestored") or 0
    restore = duration(keys.get("time_to_restore_seconds", {}).get("p50"))
    failed = f"{keys['failures']}/{keys['releases']}"
    return {
        "app": name,
        "days": str(keys["days"]),
        "deploys": str(keys["deployments"]),
        "per_day": f"{keys['deployments_per_day']:.2f}",
        "lead_p50": duration(lead.get("p50")),
        "lead_p90": duration(lead.get("p90")),
        "fail_rate": "-" if rate is None else f"{rate * 100:.0f}% ({failed})",
        "restore_p50": restore + (f" ({unrestored} failing)" if unrestored else ""),
    }


def duration(seconds: float | None) -> str:
    """1h05m, 12m30s, 45s; `-` when there is none."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 24:
        return f"{hours // 24}d{hours % 24:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
