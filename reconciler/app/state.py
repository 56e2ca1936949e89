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
import reprlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

import structlog
from pydantic import BaseModel, BeforeValidator, Field, TypeAdapter, ValidationError

from reconciler.adapters.files import set_aside, write_atomically
from reconciler.app.cache import PerAppCache
from reconciler.decisions.analysis import AnalysisRun
from reconciler.decisions.approval import ApprovalRequest
from reconciler.decisions.kept import trimmed
from reconciler.decisions.model import (
    Attempt,
    DefinitionMark,
    HistoryEntry,
    Hold,
    Pin,
    PreDeployRun,
    Release,
)
from reconciler.decisions.timeline import ReleaseStages

HISTORY_LIMIT = 20  # history entries the status shows (the memory keeps RELEASES_KEPT)
log = structlog.get_logger("reconciler.state")


@dataclass
class AppMemory:
    hold: Hold | None = None
    attempt: Attempt | None = None
    build_failures: dict[str, int] = field(default_factory=dict)  # revision -> failed builds
    # Newest first, bounded as decisions/kept.py says (RELEASES_KEPT releases).
    history: list[HistoryEntry] = field(default_factory=list)
    # Revisions whose pre-deploy task succeeded (revision -> when): never run twice.
    pre_deploy_done: dict[str, datetime] = field(default_factory=dict)
    pre_deploy_run: PreDeployRun | None = None
    tagged: str | None = None  # the revision the extra tags name
    pin: Pin | None = None  # an operator's rollback, kept across restarts
    # With `definitions`: the definition last seen live and the task definition carrying it.
    definition: DefinitionMark | None = None
    # An app with several services: the release under way (or the last), part by part.
    release: Release | None = None
    # An app with `approval`: the release waiting for (or given) approval, and who said what,
    # so a restart or a new owner keeps the wait and its votes.
    approval: ApprovalRequest | None = None
    # An app with `analysis`: the metric analysis of its latest release, measurement by
    # measurement, so a restart or a new owner goes on from what was really measured.
    analysis: AnalysisRun | None = None
    # The stages of the release under way (none between releases): a restart goes on.
    timeline: ReleaseStages | None = None
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


class CachedStateStore:
    """What every store does alike: each app's memory read once and kept, written through."""

    def __init__(self, memories: PerAppCache[AppMemory]) -> None:
        self._memories = memories

    def load(self, app: str) -> AppMemory:
        """The app's memory: read the first time, the same object afterwards."""
        return self._memories.get(app)

    def forget(self, app: str) -> None:
        """Drop an app that left this daemon (what is stored stays for a later return)."""
        self._memories.forget(app)

    def write_error(self, app: str) -> str | None:
        """Why the app's last write failed, or None when the store is up to date."""
        return self._memories.write_error(app)

    async def reset(self, app: str) -> AppMemory:
        memory = cleared(self.load(app))
        await self.save(app)
        return memory

    async def save(self, app: str, memory: AppMemory | None = None) -> bool:
        raise NotImplementedError


class FileStateStore(CachedStateStore):
    """One JSON file per app in state_dir/apps."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / "apps"
        super().__init__(PerAppCache(self._read, logger="reconciler.state", subject="state"))

    def _path(self, app: str) -> Path:
        return self._dir / f"{app}.json"

    def peek(self, app: str) -> AppMemory:
        """The app's memory as on disk now, for read-only commands; never moves a file."""
        try:
            return decode_memory(self._path(app).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return AppMemory()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return AppMemory(damaged=f"state file damaged: {why_unreadable(exc)}")

    async def save(self, app: str, memory: AppMemory | None = None) -> bool:
        return self.save_now(app, memory)

    def save_now(self, app: str, memory: AppMemory | None = None) -> bool:
        """Write the app's memory (or `memory`, which becomes it) through to disk; False (and
        recorded) when that failed."""
        memory = self.load(app) if memory is None else self._memories.put(app, memory)
        try:
            self._write(app, memory)
        except OSError as exc:
            reason = f"cannot write state file {self._path(app)}: {exc.strerror or exc}"
            return self._memories.write_failed(app, reason)
        return self._memories.written(app)

    def _write(self, app: str, memory: AppMemory) -> None:
        payload = json.dumps(_encode(memory), indent=1, default=_iso).encode()
        write_atomically(self._path(app), payload)

    def _read(self, app: str) -> AppMemory:
        path = self._path(app)
        try:
            return decode_memory(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return AppMemory()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return self._damaged(app, path, exc)

    def _damaged(self, app: str, path: Path, exc: Exception) -> AppMemory:
        kept = path.with_name(path.name + ".corrupt")
        try:
            set_aside(path)
        except OSError as move_error:
            log.error("state_file_not_moved", app=app, error=str(move_error))
        reason = (
            f"state file damaged ({why_unreadable(exc)}), kept as {kept.name}; "
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
    memory.release = None
    memory.approval = None  # a sync starts over: the release asks again
    memory.analysis = None  # ... and is measured again
    return memory


def requiring(*keys: str) -> BeforeValidator:
    """Keys the file must have though the class has a default for them: every writer wrote
    them, so one missing is damage (raised as KeyError, as a lookup of it would)."""

    def check(value: object) -> object:
        if isinstance(value, dict):
            for key in keys:
                if key not in value:
                    raise KeyError(key)
        return value

    return BeforeValidator(check)


class _MemoryFile(BaseModel):
    """An app's memory as its file and the lease table hold it, keys in the order written.
    A key with a default may be missing (an older writer's file) and is read as the
    default; one without must be there. `damaged` is never written."""

    hold: Annotated[Hold | None, requiring("since")]
    attempt: Annotated[Attempt | None, requiring("at")] = None
    build_failures: dict[str, int]
    pre_deploy_done: dict[str, datetime] = Field(default_factory=dict)
    pre_deploy_run: Annotated[PreDeployRun | None, requiring("at")] = None
    tagged: str | None = None
    pin: Annotated[Pin | None, requiring("since")] = None
    definition: DefinitionMark | None = None
    release: Release | None = None
    approval: ApprovalRequest | None = None
    analysis: AnalysisRun | None = None
    timeline: ReleaseStages | None = None
    history: list[HistoryEntry]  # newest first, bounded (decisions/kept.py)


def _encode(memory: AppMemory) -> dict[str, Any]:
    """The memory as plain data, times left as datetimes for `_iso` (as isoformat writes them,
    `+00:00` rather than pydantic's `Z`)."""
    fields = {name: getattr(memory, name) for name in _MemoryFile.model_fields}
    fields["history"] = trimmed(memory.history)
    dumped = _MemoryFile.model_construct(**fields).model_dump()
    # Who asked is written only when someone did (a commit time and stages only when known):
    # a file without them reads the same, and an older daemon finds the keys it knows.
    for entry in dumped["history"]:
        compact_entry(entry)
    # Only apps with `definitions`, `services`, `approval`, `analysis` write them; a
    # timeline only while a release is under way.
    for key in ("definition", "release", "approval", "analysis", "timeline"):
        if dumped.get(key) is None:
            dumped.pop(key, None)
    if dumped.get("timeline") is not None:
        compact_entry(dumped["timeline"])
    if dumped.get("approval") is not None and dumped["approval"].get("rejected") is None:
        dumped["approval"].pop("rejected", None)
    if dumped.get("pin") is not None and dumped["pin"].get("asked_by") is None:
        dumped["pin"].pop("asked_by", None)
    for name, keys in (("pre_deploy_run", ("token", "host")), ("attempt", ("host",))):
        record = dumped.get(name)
        if record is not None:
            for key in keys:  # likewise, only once a record has them
                if not record.get(key):
                    record.pop(key, None)
    return dumped


def compact_entry(entry: dict[str, Any]) -> None:
    """A history entry without the keys that say nothing: 500 of them are written whole."""
    for key in ("by", "committed_at", "analysis"):
        if entry.get(key) is None:
            entry.pop(key, None)
    if not entry.get("stages"):
        entry.pop("stages", None)
    for stage in entry.get("stages", ()):
        for key in ("part", "step"):
            if not stage.get(key):
                stage.pop(key, None)


def _iso(value: object) -> str:
    if not isinstance(value, datetime):
        raise TypeError(f"{type(value).__name__} is not JSON")
    return value.isoformat()


def encode_memory(memory: AppMemory, *, with_history: bool = True) -> str:
    """The memory as JSON; without its history (`[]` in its place) where the history is
    kept apart (encode_history): the lease table writes it only when it changed."""
    encoded = _encode(memory)
    if not with_history:
        encoded["history"] = []
    return json.dumps(encoded, separators=(",", ":"), default=_iso)


_HISTORY = TypeAdapter(list[HistoryEntry])


def encode_history(history: list[HistoryEntry]) -> str:
    """The history as kept (decisions/kept.py), as the memory's JSON would hold it."""
    dumped = _HISTORY.dump_python(trimmed(history))
    for entry in dumped:
        compact_entry(entry)
    return json.dumps(dumped, separators=(",", ":"), default=_iso)


def decode_memory(text: str, history: str | None = None) -> AppMemory:
    """The memory in `text`, with the history kept apart in `history` when there is one
    (the newer of the two, should a daemon of an older version have written the memory
    with a history of its own since); raises ValueError, KeyError or TypeError when it is
    not one."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise TypeError(f"expected an object, got {type(raw).__name__}")
    memory = AppMemory(**dict(_MemoryFile.model_validate(raw)))
    if history is not None:
        apart = _HISTORY.validate_python(json.loads(history))
        inline = memory.history
        if not inline or (apart and apart[0].finished_at >= inline[0].finished_at):
            memory.history = apart
    return memory


def why_unreadable(exc: Exception) -> str:
    """One line on why a memory could not be read: its first fault, where it is."""
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        if error["type"] == "missing":
            return f"missing key {error['loc'][-1]!r}"
        kind = "TypeError" if error["type"].endswith("_type") else "ValueError"
        where = ".".join(str(part) for part in error["loc"])
        return f"{kind}: {where}: {error['msg']}, not {reprlib.repr(error['input'])}"
    if isinstance(exc, KeyError):
        return f"missing key {exc}"
    return f"{type(exc).__name__}: {exc}"
