"""The little an app must remember across restarts, kept as one JSON file per app in state_dir.

A Failed hold lives here so that a crash loop under systemd can never become a deploy loop,
and the count of failed builds per revision so a broken Dockerfile is tried at most 3 times.
Everything else is observed again from git, the registry and ECS on every pass.
Writes are atomic (write a temporary file, fsync, rename), so a crash leaves the old or the
new file, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.model import HistoryEntry, Hold, Result

HISTORY_LIMIT = 20


@dataclass
class AppMemory:
    hold: Hold | None = None
    build_failures: dict[str, int] = field(default_factory=dict)  # revision -> failed builds
    history: list[HistoryEntry] = field(default_factory=list)  # newest first


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / "apps"

    def _path(self, app: str) -> Path:
        return self._dir / f"{app}.json"

    def load(self, app: str) -> AppMemory:
        try:
            raw = json.loads(self._path(app).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return AppMemory()
        except (OSError, ValueError):
            # A damaged file must not stop the app; the hold is lost, which is the lesser harm
            # than an app that never reconciles again. The loop logs the reset.
            return AppMemory()
        return _decode(raw)

    def save(self, app: str, memory: AppMemory) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(_encode(memory), indent=1).encode()
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=f".{app}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            Path(tmp).replace(self._path(app))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _encode(memory: AppMemory) -> dict[str, Any]:
    hold = memory.hold
    return {
        "hold": None
        if hold is None
        else {
            "revision": hold.revision,
            "reason": hold.reason,
            "config_fingerprint": hold.config_fingerprint,
            "since": hold.since.isoformat(),
            "rollback_to": hold.rollback_to,
        },
        "build_failures": memory.build_failures,
        "history": [
            {
                "revision": h.revision,
                "result": h.result.value,
                "started_at": h.started_at.isoformat(),
                "finished_at": h.finished_at.isoformat(),
                "error": h.error,
            }
            for h in memory.history[:HISTORY_LIMIT]
        ],
    }


def _decode(raw: dict[str, Any]) -> AppMemory:
    hold_raw = raw.get("hold")
    hold = None
    if isinstance(hold_raw, dict):
        hold = Hold(
            revision=str(hold_raw["revision"]),
            reason=str(hold_raw.get("reason", "")),
            config_fingerprint=str(hold_raw.get("config_fingerprint", "")),
            since=datetime.fromisoformat(hold_raw["since"]),
            rollback_to=hold_raw.get("rollback_to"),
        )
    history = [
        HistoryEntry(
            revision=str(h["revision"]),
            result=Result(h["result"]),
            started_at=datetime.fromisoformat(h["started_at"]),
            finished_at=datetime.fromisoformat(h["finished_at"]),
            error=h.get("error"),
        )
        for h in raw.get("history", [])
    ]
    failures = {str(k): int(v) for k, v in dict(raw.get("build_failures", {})).items()}
    return AppMemory(hold=hold, build_failures=failures, history=history)
