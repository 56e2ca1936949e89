"""GET /report: the four keys (decisions/four_keys.py) per app and over all, for
`reconciler report` and anyone with a read token.

`?app=NAME` for one app, `?days=N` (1..MAX_DAYS) for one window instead of 7 and 30. The
caller needs read access (the guard's identity and Action.READ); only the apps its globs
cover are shown and pooled into "all", so a team's token never learns of another team's
releases, even as a sum. An app it may not see answers 404, as an unknown one does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from reconciler.api.face import DAEMON, DaemonView, error
from reconciler.api.guard import allowed, visible_to
from reconciler.decisions.access import Action
from reconciler.decisions.four_keys import MAX_DAYS, WINDOWS, four_keys
from reconciler.decisions.model import HistoryEntry, utcnow


def windows_of(text: str | None) -> tuple[int, ...] | str:
    """The windows asked for, or why `days` is not one."""
    if text is None:
        return WINDOWS
    if not text.isdigit() or not 1 <= int(text) <= MAX_DAYS:
        return f"days must be a whole number from 1 to {MAX_DAYS}"
    return (int(text),)


def report_document(
    histories: Mapping[str, Sequence[HistoryEntry]], windows: Sequence[int]
) -> dict[str, Any]:
    """The keys of `histories` (app -> releases) for each window, per app and over all."""
    now = utcnow()
    return {
        "generated_at": now.isoformat().replace("+00:00", "Z"),
        "apps": sorted(histories),
        "windows": [
            {
                "days": days,
                "all": four_keys(histories, now=now, days=days).to_json(),
                "per_app": {
                    name: four_keys({name: history}, now=now, days=days).to_json()
                    for name, history in sorted(histories.items())
                },
            }
            for days in windows
        ],
    }


def histories_seen(request: web.Request, daemon: DaemonView) -> dict[str, Sequence[HistoryEntry]]:
    return {n: daemon.releases(n) for n in daemon.app_names() if visible_to(request, n)}


async def report(request: web.Request) -> web.Response:
    refusal = allowed(request, Action.READ)
    if refusal is not None:
        return refusal
    daemon = request.app[DAEMON]
    windows = windows_of(request.query.get("days"))
    if isinstance(windows, str):
        return error(400, windows)
    await daemon.refresh_remote()
    histories = histories_seen(request, daemon)
    app = request.query.get("app")
    if app is not None:
        if app not in histories:
            return error(404, f"unknown app {app!r}")
        histories = {app: histories[app]}
    return web.json_response(report_document(histories, windows))
