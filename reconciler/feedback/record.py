"""What each app's feedback should say and what was already said, per commit, on disk.

For every recent commit of an app the record keeps the state the forge should show (`want`:
the commit status, and the deployment's status if one began) next to what the forge was
last told (`sent`), and which chat outcomes went out. A sender only ever works off the
difference, so a forge that was down for an hour is told the newest state once, not the
hour's history; and a restarted daemon that sees the same revision again (a rollout it
resumes watching, say) repeats nothing. One attempt at a revision runs from a pass starting
on it to its end; a pass on the same revision after that (an operator's sync) is a new
attempt, with a new deployment and new messages.

`state_dir/feedback/<app>.json`, written atomically (a temporary file renamed over it). A
file that cannot be read or decoded is moved aside, logged and treated as empty: feedback
is best effort, and the worst an empty record does is repeat a status.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from pydantic import BaseModel, StrictInt, ValidationError

from reconciler.adapters.files import set_aside, write_atomically
from reconciler.app.cache import PerAppCache
from reconciler.app.state import requiring, why_unreadable
from reconciler.feedback.translate import DeployStarted, Ended, Notice, Started, State

log = structlog.get_logger("reconciler.feedback")

COMMITS_KEPT = 20  # per app; the oldest is forgotten first (and its unsent work dropped)
VERSION = 1
DeployState = Literal["in_progress", "success", "failure", "inactive"]
_DEPLOY_END: dict[str, DeployState] = {
    "success": "success",
    "failure": "failure",
    "error": "inactive",
}


@dataclass
class Want:
    status: State
    description: str
    deployment: DeployState | None = None
    deployment_description: str = ""


@dataclass
class Commit:
    sha: str
    attempt: int = 1
    ended: bool = False
    want: Want | None = None
    # What the forge was told, in its own words: "<attempt>:<state>" of the commit status.
    status_sent: str | None = None
    deployment_id: StrictInt | None = None  # the forge's: an int, never a bool or text
    deployment_attempt: int = 0  # the attempt deployment_id was created for
    deployment_sent: str | None = None  # the last state that deployment was given
    notified: list[str] = field(default_factory=list)  # outcomes messaged this attempt


@dataclass
class AppRecord:
    forge: str = ""  # the Forge.key the `sent` parts were said to
    commits: dict[str, Commit] = field(default_factory=dict)  # oldest first

    def commit(self, sha: str) -> Commit:
        """The commit's entry, made the newest (created at attempt 1 if new)."""
        entry = self.commits.pop(sha, None) or Commit(sha=sha)
        self.commits[sha] = entry
        return entry

    def prune(self) -> list[Commit]:
        """Forget the oldest commits beyond COMMITS_KEPT; the ones forgotten."""
        gone: list[Commit] = []
        while len(self.commits) > COMMITS_KEPT:
            oldest = next(iter(self.commits))
            gone.append(self.commits.pop(oldest))
        return gone

    def use_forge(self, key: str) -> None:
        """The app's repository moved to another forge (or another name): nothing was said
        there yet."""
        if self.forge == key:
            return
        self.forge = key
        for entry in self.commits.values():
            entry.status_sent = None
            entry.deployment_id = None
            entry.deployment_attempt = 0
            entry.deployment_sent = None


def apply(record: AppRecord, intent: Started | DeployStarted | Ended) -> bool:
    """Fold an intent into the record; True when what the forge should show changed."""
    if isinstance(intent, Started | DeployStarted):
        entry = record.commit(intent.revision)
        if entry.ended:
            _next_attempt(entry)
        before = None if entry.want is None else replace(entry.want)
        if entry.want is None:
            entry.want = Want(status="pending", description=intent.description)
        if isinstance(intent, DeployStarted) and entry.want.deployment is None:
            entry.want.deployment = "in_progress"
            entry.want.deployment_description = intent.description
        return entry.want != before
    entry = record.commit(intent.revision)
    if entry.ended:
        if entry.want is not None and entry.want.status == intent.state:
            return False  # the same end, seen again (a restart, a replayed event)
        _next_attempt(entry)
    had_deployment = entry.want is not None and entry.want.deployment is not None
    deployment: DeployState | None = None
    if intent.deployed or had_deployment:
        deployment = _DEPLOY_END[intent.state]
    entry.want = Want(
        status=intent.state,
        description=intent.description,
        deployment=deployment,
        deployment_description=intent.description if deployment else "",
    )
    entry.ended = True
    return True


def first_notice(record: AppRecord, notice: Notice) -> bool:
    """True (and remembered) the first time this attempt at the revision has this outcome."""
    entry = record.commit(notice.revision)
    if notice.outcome in entry.notified:
        return False
    entry.notified.append(notice.outcome)
    return True


def _next_attempt(entry: Commit) -> None:
    entry.attempt += 1
    entry.ended = False
    entry.want = None
    entry.notified = []


class Records:
    """The records of every app, read once and written through on each change."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "feedback"
        self._records = PerAppCache(
            self._read, logger="reconciler.feedback", subject="feedback_record"
        )
        # With a cluster, every save is also handed here (app, JSON) for the lease table,
        # so the next owner of the app knows what was said.
        self.mirror: Callable[[str, str], None] | None = None

    @property
    def write_errors(self) -> Mapping[str, str]:
        """Why each app's last write failed, for apps whose record is not on disk."""
        return self._records.write_errors

    def adopt(self, app: str, text: str | None) -> None:
        """Take over what another daemon recorded for `app` (None: it recorded nothing)."""
        if text is None:
            return
        try:
            self._records.put(app, _decode(json.loads(text)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("feedback_record_damaged", app=app, error=_why(exc))
            return
        self.save(app, mirror=False)

    def path(self, app: str) -> Path:
        return self.root / f"{app}.json"

    def get(self, app: str) -> AppRecord:
        return self._records.get(app)

    def forget(self, app: str) -> None:
        self._records.forget(app)

    def save(self, app: str, *, mirror: bool = True) -> None:
        encoded = _encode(self.get(app))
        if mirror and self.mirror is not None:
            self.mirror(app, json.dumps(encoded, separators=(",", ":")))
        try:
            write_atomically(self.path(app), json.dumps(encoded, indent=1).encode())
        except OSError as exc:
            self._records.write_failed(app, f"cannot write {self.path(app)}: {exc.strerror or exc}")
            return
        self._records.written(app)

    def _read(self, app: str) -> AppRecord:
        path = self.path(app)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return _decode(raw)
        except FileNotFoundError:
            return AppRecord()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            try:
                aside = set_aside(path)
            except OSError:
                aside = path
            log.error("feedback_record_damaged", app=app, error=_why(exc), moved_to=str(aside))
            return AppRecord()


class _RecordFile(BaseModel):
    """An app's record as its file and the lease table hold it: its commits oldest first.
    A commit's key with a default may be missing (read as the default), but for the two
    every version wrote."""

    version: int
    forge: str = ""
    commits: list[Annotated[Commit, requiring("attempt", "ended")]]


def _encode(record: AppRecord) -> dict[str, Any]:
    return _RecordFile.model_construct(
        version=VERSION, forge=record.forge, commits=list(record.commits.values())
    ).model_dump()


def _decode(raw: Any) -> AppRecord:
    if not isinstance(raw, dict) or raw.get("version") != VERSION:
        raise ValueError("not a feedback record of this version")
    read = _RecordFile.model_validate(raw)
    return AppRecord(forge=read.forge, commits={entry.sha: entry for entry in read.commits})


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return why_unreadable(exc)[:200]
    return f"{type(exc).__name__}: {exc}"[:200]
