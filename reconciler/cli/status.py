"""`reconciler status` and `reconciler history`: what a running daemon says of its apps."""

from __future__ import annotations

import argparse
import json
import urllib.parse
from datetime import datetime
from typing import Any

from reconciler.cli.client import read, with_daemon
from reconciler.cli.common import EXIT_OK, print_table


def register(sub: Any) -> None:
    status = sub.add_parser("status", help="the daemon's status as a table")
    status.add_argument("app", nargs="?", help="one app in detail: its rollout and history")
    with_daemon(status)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    history = sub.add_parser("history", help="an app's last outcomes as a table")
    history.add_argument("app")
    with_daemon(history)
    history.add_argument("--json", action="store_true")
    history.add_argument(
        "--stages", action="store_true", help="each release's stages, with start and duration"
    )
    history.set_defaults(func=cmd_history)


def cmd_status(args: argparse.Namespace) -> int:
    if args.app:
        return _status_of_one(args, args.app, as_json=args.json)
    body = read(args, "/status")
    if args.json:
        print(json.dumps(body, indent=2))
        return EXIT_OK
    rows = [
        {
            "app": a["name"],
            "phase": a["phase"],
            "desired": (a["desired"].get("revision") or "-")[:12],
            "live": a["live"].get("image") or "-",
            "since": a["last_transition"],
            "error": (a.get("last_error") or "").splitlines()[0][:60]
            if a.get("last_error")
            else "",
            "owner": a.get("owner") or "-",
        }
        for a in body.get("apps", [])
    ]
    columns = ["app", "phase", "desired", "live", "since", "error"]
    if any("owner" in a for a in body.get("apps", [])):
        columns.insert(2, "owner")  # several daemons share the apps
    print_table(rows, columns)
    return EXIT_OK


def status_of(args: argparse.Namespace, app: str) -> dict[str, Any]:
    """GET /status/APP: what the daemon says of one app."""
    path = f"/status/{urllib.parse.quote(app, safe='')}"
    return read(args, path, not_found=f"unknown app {app!r}")


def _status_of_one(args: argparse.Namespace, app: str, *, as_json: bool) -> int:
    body = status_of(args, app)
    if as_json:
        print(json.dumps(body, indent=2))
        return EXIT_OK
    lines = [
        f"app:        {body['name']}",
        f"phase:      {body['phase']} since {body['last_transition']}",
        f"desired:    {body['desired'].get('image') or '-'}",
        f"live:       {body['live'].get('image') or '-'} ({body['live'].get('task_definition')})",
    ]
    rollout = body.get("rollout")
    if rollout:
        counts = f"{rollout.get('running')}/{rollout.get('desired')} running"
        lines.append(
            f"rollout:    {rollout['kind']} {rollout['strategy']} {rollout.get('status') or '-'}"
            f" stage {rollout.get('stage') or '-'}, {counts}, "
            f"{rollout.get('failed_tasks', 0)} failed tasks"
        )
        if rollout.get("alarms_triggered"):
            lines.append(f"alarms:     {', '.join(rollout['alarms_triggered'])}")
        lines.append(
            f"            started {rollout.get('started_at')}, "
            f"finished {rollout.get('finished_at') or '-'}"
        )
    if body.get("last_error"):
        lines.append("last error: " + body["last_error"].replace("\n", "\n            "))
    print("\n".join(lines))
    history = [
        {
            "revision": (h["revision"] or "")[:12],
            "result": h["result"],
            "finished": h["finished_at"],
            "error": (h.get("error") or "").splitlines()[0][:60] if h.get("error") else "",
        }
        for h in body.get("history", [])
    ]
    if history:
        print()
        print_table(history, ["revision", "result", "finished", "error"])
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    body = status_of(args, args.app)
    if args.json:
        print(json.dumps(body.get("history", []), indent=2))
        return EXIT_OK
    rows = [
        {
            "revision": h["revision"][:12],
            "result": h["result"],
            "started": h["started_at"],
            "finished": h["finished_at"],
            "error": (h.get("error") or "").splitlines()[0][:60] if h.get("error") else "",
        }
        for h in body.get("history", [])
    ]
    if args.stages:
        print_stages(body)
        return EXIT_OK
    print_table(rows, ["revision", "result", "started", "finished", "error"])
    return EXIT_OK


def print_stages(body: dict[str, Any]) -> None:
    """The release under way (if any), then each release: its stages in the order they
    began, with their offset from the release's first stage and how long each took."""
    releases = list(body.get("history", []))
    if body.get("timeline"):
        revision = (body.get("desired") or {}).get("revision") or ""
        releases.insert(0, {"revision": revision, "result": "running", "stages": body["timeline"]})
    for index, entry in enumerate(releases):
        if index:
            print()
        stages = entry.get("stages") or []
        header = f"{(entry.get('revision') or '')[:12]}  {entry['result']}"
        if entry.get("finished_at"):
            header += f"  finished {entry['finished_at']}"
        print(header)
        if not stages:
            print("  (no stages recorded)")
            continue
        first = min(_time(s["started_at"]) for s in stages)
        rows = [
            {
                "stage": ("  " if s.get("step") else "") + _label(s),
                "start": f"+{_time(s['started_at']) - first:.1f}s",
                "took": "running"
                if not s.get("finished_at")
                else f"{_time(s['finished_at']) - _time(s['started_at']):.1f}s",
            }
            for s in stages
        ]
        print_table(rows, ["stage", "start", "took"])


def _label(stage: dict[str, Any]) -> str:
    text = f"{stage['name']} {stage['part']}" if stage.get("part") else stage["name"]
    return f"{text}: {stage['step']}" if stage.get("step") else text


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
