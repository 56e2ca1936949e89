"""What an app must remember across passes and restarts, one JSON file per app in state_dir.

A Failed hold lives here so that a crash loop under systemd can never become a deploy loop;
so does the attempt written before each UpdateService, which lets a pass that lost sight of
a rollout (a stop, a loop restart) tell that the revision failed unwatched. The count of
failed builds per revision keeps a broken Dockerfile to MAX_BUILD_ATTEMPTS builds.
Everything else is observed again from git, the registry and ECS on every pass.

The store is the in-memory authority: an app's memory is read from disk once, kept for the
daemon's life (loop restarts by a config reload included) and written through on every
change. It fails closed both ways:
- a file that cannot be read or decoded is moved aside as `<app>.json.corrupt`, logged, and
  the app is marked damaged: it deploys nothing until `reconciler sync APP`;
- a write that fails (disk full, read-only, permissions) keeps the memory, records the error
  and is tried again on the next change or pass; while it fails no deploy may start, though
  rollbacks still go out (a rollback never waits for the disk).
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
from typing import Any, Protocol

import structlog

from reconciler.decisions.model import Attempt, HistoryEntry, Hold, Pin, PreDeployRun, Result

HISTORY_LIMIT = 20
log = structlog.get_logger("reconciler.state")


@dataclass
class AppMemory:
    hold: Hold | None = None
    attempt: Attempt | None = None
    build_failures: dict[str, int] = field(default_factory=dict)  # revision -> failed builds
    history: list[HistoryEntry] = field(default_factory=list)  # newest first
    # Revisions whose pre-deploy task succeeded (revision -> when): never run twice.
    pre_deploy_done: dict[str, datetime] = field(default_factory=dict)
    pre_deploy_run: PreDeployRun | None = None
    tagged: str | None = None  # the revision the extra tags name
    pin: Pin | None = None  # an operator's rollback, kept across restarts
    # Set when the file on disk could not be read: the one-line reason shown to operators.
    damaged: str | None = None


class StateStore(Protocol):
    """Where app memories live: files in state_dir (FileStateStore) or the cluster's table
    (cluster/store.py). The memory is the authority in between: `load` never does I/O."""

    def load(self, app: str) -> AppMemory:
        """The app's memory, the same object for the app's whole stay in this daemon."""

    def forget(self, app: str) -> None:
        """Drop an app that left this daemon (removed from the config, or handed over)."""

    def write_error(self, app: str) -> str | None:
        """Why the app's last write failed, or None when the store is up to date."""

    async def reset(self, app: str) -> AppMemory:
        """Forget holds, attempts, build counts and damage (sync); history is kept."""

    async def save(self, app: str, memory: AppMemory | None = None) -> bool:
        """Write the memory (or `memory`, which becomes it) through; False (and recorded)
        when that failed."""


class FileStateStore:
    """One JSON file per app in state_dir/apps."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / "apps"
        self._memories: dict[str, AppMemory] = {}
        self._write_errors: dict[str, str] = {}

    def _path(self, app: str) -> Path:
        return self._dir / f"{app}.json"

    def load(self, app: str) -> AppMemory:
        """The app's memory: read from disk the first time, the same object afterwards."""
        memory = self._memories.get(app)
        if memory is None:
            memory = self._memories[app] = self._read(app)
        return memory

    def peek(self, app: str) -> AppMemory:
        """The app's memory as on disk now, for read-only commands; never moves a file."""
        try:
            return _decode(json.loads(self._path(app).read_text(encoding="utf-8")))
        except FileNotFoundError:
            return AppMemory()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return AppMemory(damaged=f"state file damaged: {_why(exc)}")

    def forget(self, app: str) -> None:
        """Drop an app removed from the config (its file stays for a later return)."""
        self._memories.pop(app, None)
        self._write_errors.pop(app, None)

    def write_error(self, app: str) -> str | None:
        """Why the app's last write failed, or None when its file is up to date."""
        return self._write_errors.get(app)

    async def reset(self, app: str) -> AppMemory:
        memory = cleared(self.load(app))
        await self.save(app)
        return memory

    async def save(self, app: str, memory: AppMemory | None = None) -> bool:
        return self.save_now(app, memory)

    def save_now(self, app: str, memory: AppMemory | None = None) -> bool:
        """Write the app's memory (or `memory`, which becomes it) through to disk; False (and
        recorded) when that failed."""
        if memory is not None:
            self._memories[app] = memory
        memory = self.load(app)
        try:
            self._write(app, memory)
        except OSError as exc:
            reason = f"cannot write state file {self._path(app)}: {exc.strerror or exc}"
            if self._write_errors.get(app) != reason:
                log.error("state_write_failed", app=app, error=reason)
            self._write_errors[app] = reason
            return False
        if self._write_errors.pop(app, None) is not None:
            log.info("state_write_recovered", app=app)
        return True

    def _write(self, app: str, memory: AppMemory) -> None:
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

    def _read(self, app: str) -> AppMemory:
        path = self._path(app)
        try:
            return _decode(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return AppMemory()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return self._damaged(app, path, exc)

    def _damaged(self, app: str, path: Path, exc: Exception) -> AppMemory:
        kept = path.with_name(path.name + ".corrupt")
        try:
            path.replace(kept)
        except OSError as move_error:
            log.error("state_file_not_moved", app=app, error=str(move_error))
        reason = (
            f"state file damaged ({_why(exc)}), kept as {kept.name}; "
            f"`reconciler sync {app}` to go on"
        )
        log.error("state_file_damaged", app=app, path=str(path), kept_as=str(kept), error=reason)
        return AppMemory(damaged=reason)


def cleared(memory: AppMemory) -> AppMemory:
    """`memory` without holds, attempts, build counts and damage (what sync clears)."""
    memory.hold = None
    memory.attempt = None
    memory.build_failures.clear()
    memory.damaged = None
    return memory


def encode_memory(memory: AppMemory) -> str:
    return json.dumps(_encode(memory), separators=(",", ":"))


def decode_memory(text: str) -> AppMemory:
    """The memory in `text`; raises ValueError, KeyError or TypeError when it is not one."""
    return _decode(json.loads(text))


def why_unreadable(exc: Exception) -> str:
    return _why(exc)


def _why(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing key {exc}"
    return f"{type(exc).__name__}: {exc}"


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _encode(memory: AppMemory) -> dict[str, Any]:
    hold, attempt = memory.hold, memory.attempt
    return {
        "hold": None
        if hold is None
        else {
            "revision": hold.revision,
            "reason": hold.reason,
            "config_fingerprint": hold.config_fingerprint,
            "since": _iso(hold.since),
            "rollback_to": hold.rollback_to,
        },
        "attempt": None
        if attempt is None
        else {
            "revision": attempt.revision,
            "task_definition": attempt.task_definition,
            "previous": attempt.previous,
            "config_fingerprint": attempt.config_fingerprint,
            "at": _iso(attempt.at),
            "deployment_id": attempt.deployment_id,
            "service_deployment": attempt.service_deployment,
        },
        "build_failures": memory.build_failures,
        "pre_deploy_done": {k: _iso(v) for k, v in memory.pre_deploy_done.items()},
        "pre_deploy_run": None
        if memory.pre_deploy_run is None
        else {
            "revision": memory.pre_deploy_run.revision,
            "task": memory.pre_deploy_run.task,
            "at": _iso(memory.pre_deploy_run.at),
        },
        "tagged": memory.tagged,
        "pin": None
        if memory.pin is None
        else {
            "revision": memory.pin.revision,
            "config_fingerprint": memory.pin.config_fingerprint,
            "by": memory.pin.by,
            "since": _iso(memory.pin.since),
        },
        "history": [
            {
                "revision": h.revision,
                "result": h.result.value,
                "started_at": _iso(h.started_at),
                "finished_at": _iso(h.finished_at),
                "error": h.error,
            }
            for h in memory.history[:HISTORY_LIMIT]
        ],
    }


def _optional_str(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _decode(raw: Any) -> AppMemory:
    """The memory in `raw`; raises KeyError, TypeError or ValueError on anything unexpected."""
    if not isinstance(raw, dict):
        raise TypeError(f"expected an object, got {type(raw).__name__}")
    hold_raw = raw["hold"]
    hold = None
    if hold_raw is not None:
        hold = Hold(
            revision=str(hold_raw["revision"]),
            reason=str(hold_raw["reason"]),
            config_fingerprint=str(hold_raw["config_fingerprint"]),
            since=datetime.fromisoformat(hold_raw["since"]),
            rollback_to=_optional_str(hold_raw.get("rollback_to")),
        )
    attempt_raw = raw.get("attempt")
    attempt = None
    if attempt_raw is not None:
        attempt = Attempt(
            revision=str(attempt_raw["revision"]),
            task_definition=str(attempt_raw["task_definition"]),
            previous=_optional_str(attempt_raw["previous"]),
            config_fingerprint=str(attempt_raw["config_fingerprint"]),
            at=datetime.fromisoformat(attempt_raw["at"]),
            deployment_id=_optional_str(attempt_raw.get("deployment_id")),
            service_deployment=_optional_str(attempt_raw.get("service_deployment")),
        )
    history = [
        HistoryEntry(
            revision=str(h["revision"]),
            result=Result(h["result"]),
            started_at=datetime.fromisoformat(h["started_at"]),
            finished_at=datetime.fromisoformat(h["finished_at"]),
            error=_optional_str(h.get("error")),
        )
        for h in raw["history"]
    ]
    failures = {str(k): int(v) for k, v in dict(raw["build_failures"]).items()}
    done = {
        str(k): datetime.fromisoformat(v) for k, v in dict(raw.get("pre_deploy_done", {})).items()
    }
    run_raw = raw.get("pre_deploy_run")
    run = None
    if run_raw is not None:
        run = PreDeployRun(
            revision=str(run_raw["revision"]),
            task=_optional_str(run_raw.get("task")),
            at=datetime.fromisoformat(run_raw["at"]),
        )
    pin_raw = raw.get("pin")
    pin = None
    if pin_raw is not None:
        pin = Pin(
            revision=str(pin_raw["revision"]),
            config_fingerprint=str(pin_raw["config_fingerprint"]),
            by=str(pin_raw.get("by", "rollback")),
            since=datetime.fromisoformat(pin_raw["since"]),
        )
    return AppMemory(
        pin=pin,
        hold=hold,
        attempt=attempt,
        build_failures=failures,
        history=history,
        pre_deploy_done=done,
        pre_deploy_run=run,
        tagged=_optional_str(raw.get("tagged")),
    )
