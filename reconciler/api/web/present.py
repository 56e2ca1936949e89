"""What the pages show of an app, worked out from its AppStatus and config.

Templates get these plain values and only lay them out; every string here may be untrusted
(errors hold build and test output, branches and commit text come from git) and is escaped
by the templates' autoescape, never marked safe.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.api.web.links import Links, short_sha
from reconciler.app.reporter import BUSY
from reconciler.app.status import AppStatus
from reconciler.config import AppConfig
from reconciler.decisions.model import HistoryEntry, Phase, utcnow
from reconciler.decisions.repourl import redact_url

FIRST_LINE_LIMIT = 200  # characters of an error's first line in a table cell
UNKNOWN = "Unknown"  # the phase shown of a status that could not be read
WEB = ("http://", "https://")


def phase_class(phase: str) -> str:
    """The CSS class of a phase: `phase-insync`, `phase-failed`, ... (the JS mirrors this)."""
    known = {p.value for p in Phase}
    return f"phase-{phase.lower()}" if phase in known else "phase-unknown"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def first_line(text: str | None) -> str | None:
    if not text or not text.strip():
        return None
    line = text.strip().splitlines()[0].strip()
    return line if len(line) <= FIRST_LINE_LIMIT else line[: FIRST_LINE_LIMIT - 1] + "…"


def ago(moment: datetime, now: datetime) -> str:
    """How long ago `moment` was, or how long until it (a freeze's end, an expiry)."""
    seconds = int((now - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
        if -seconds >= size:
            return f"in {-seconds // size} {unit}"
    return "just now" if seconds >= 0 else "in under a minute"


@dataclass(frozen=True)
class Moment:
    iso: str
    text: str  # 2024-05-01 12:00:00 UTC
    ago: str

    @classmethod
    def of(cls, moment: datetime, now: datetime) -> Moment:
        text = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
        return cls(iso=iso(moment), text=text, ago=ago(moment, now))


@dataclass(frozen=True)
class Revision:
    sha: str
    short: str
    url: str | None  # the forge's commit page, where the repository is on one we know
    subject: str | None  # the commit's first line, where the mirror had it at hand


def revision(
    repo: str, sha: str | None, subjects: Mapping[str, str], links: Links
) -> Revision | None:
    if not sha:
        return None
    return Revision(
        sha=sha, short=short_sha(sha), url=links.commit(repo, sha), subject=subjects.get(sha)
    )


@dataclass(frozen=True)
class HistoryRow:
    revision: Revision | None
    result: str
    result_class: str
    started: Moment
    finished: Moment
    took: str
    error: str | None
    error_line: str | None
    by: str | None  # who asked for the pass (a sync, rollback or unpin)


def _took(entry: HistoryEntry) -> str:
    seconds = max(0, int((entry.finished_at - entry.started_at).total_seconds()))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def history_row(
    repo: str, entry: HistoryEntry, now: datetime, subjects: Mapping[str, str], links: Links
) -> HistoryRow:
    result = entry.result.value
    return HistoryRow(
        revision=revision(repo, entry.revision, subjects, links),
        result=result.replace("_", " "),
        result_class="result-" + "".join(c for c in result if c.isalnum() or c == "_"),
        started=Moment.of(entry.started_at, now),
        finished=Moment.of(entry.finished_at, now),
        took=_took(entry),
        error=entry.error,
        error_line=first_line(entry.error),
        by=entry.by,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def fields_of(value: Any) -> list[tuple[str, str]]:
    """Label/text pairs for a value of a shape the dashboard does not know in advance (an
    app's rollout, say): its to_json(), a dataclass or a mapping; anything else as one text."""
    to_json = getattr(value, "to_json", None)
    plain = _plain(to_json() if callable(to_json) else value)
    if not isinstance(plain, dict):
        return [("", _text(plain))]
    return [(key.replace("_", " "), _text(item)) for key, item in plain.items()]


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return json.dumps(value, default=str, ensure_ascii=False)


@dataclass(frozen=True)
class Owner:
    """Which daemon of a cluster reconciles the app (the pages show none without a lease
    table). Host ids and URLs come from the lease table: untrusted text like the rest."""

    here: bool  # this daemon
    host: str | None  # None: no daemon holds the app's lease now
    page_url: str | None  # the app's page on the owner's dashboard, when its URL is known
    heartbeat: str | None  # how long ago the owner's last heartbeat was: "4.2 s ago"
    lease_version: int | None
    unreadable: str | None = None  # why what the owner published cannot be shown here


def owner_of(name: str, document: Mapping[str, Any] | None) -> Owner | None:
    """From the keys an app's /status document has with a cluster; None without one."""
    if document is None or "owner" not in document:
        return None
    host = document.get("owner")
    here = document.get("here") is True
    url = document.get("owner_url")
    page_url = None
    # Only a web address is linked: a URL that is anything else is no dashboard of ours.
    if host and not here and isinstance(url, str) and url.lower().startswith(WEB):
        page_url = Links(url).app(name)
    age = document.get("lease_age_seconds")
    version = document.get("lease_version")
    return Owner(
        here=here,
        host=str(host) if host else None,
        page_url=page_url,
        heartbeat=f"{age:.1f} s ago" if isinstance(age, int | float) else None,
        lease_version=version if isinstance(version, int) else None,
    )


@dataclass(frozen=True)
class AppView:
    name: str
    page_url: str
    sync_url: str
    phase: str
    phase_class: str
    busy: bool
    branch: str
    repo: str
    commit_prefix: str | None  # for the live updates, which link a new revision likewise
    revision: Revision | None
    desired_image: str | None
    live_image: str | None
    live_task_definition: str | None
    since: Moment
    error: str | None
    error_line: str | None
    history: list[HistoryRow]
    rollout: list[tuple[str, str]] | None
    owner: Owner | None  # None without a cluster
    # Live differing from the app's definitions: `path: live -> desired` lines, and since.
    drift: tuple[str, ...] = ()
    drift_since: Moment | None = None
    approval: Approval | None = None  # the release waiting for approval
    parts: list[Part] = dataclasses.field(default_factory=list)  # a release of several
    frozen: Frozen | None = None  # the freeze holding the release back
    analysis: Analysis | None = None  # the latest release's metric analysis


@dataclass(frozen=True)
class Part:
    """A service or schedule of a release of several parts, as the app's page lists it."""

    kind: str
    name: str
    phase: str
    phase_class: str
    task_definition: str | None


@dataclass(frozen=True)
class Frozen:
    reason: str
    until: Moment


@dataclass(frozen=True)
class Analysis:
    """The latest release's metric analysis, as the app's page shows it: one row per check
    (name, query, values so far, verdict) and the release's verdict."""

    revision: str
    state: str
    rows: list[tuple[str, str, str, str]]
    reason: str


def analysis_of(status: AppStatus) -> Analysis | None:
    found = status.analysis
    if found is None:
        return None
    rows = [
        (
            c.name,
            c.query,
            ", ".join("no data" if v is None else f"{v:g}" for v in c.values) or "-",
            c.verdict.value,
        )
        for c in found.checks
    ]
    return Analysis(
        revision=short_sha(found.revision), state=found.state.value, rows=rows, reason=found.reason
    )


@dataclass(frozen=True)
class Approval:
    """The release waiting for approval, as the app's page shows it (with its two forms)."""

    revision: str
    digest: str
    required: int
    approvals: list[tuple[str, str]]  # (who, what they said)
    expires: Moment
    changes: tuple[str, ...]
    approve_url: str
    reject_url: str


def approval_of(status: AppStatus, links: Links, name: str, now: datetime) -> Approval | None:
    waiting = status.approval
    if waiting is None or status.phase is not Phase.AWAITING_APPROVAL:
        return None
    return Approval(
        revision=waiting.revision,
        digest=waiting.digest,
        required=waiting.required,
        approvals=[(v.by, v.comment) for v in waiting.approvals],
        expires=Moment.of(waiting.expires_at, now),
        changes=waiting.changes,
        approve_url=links.app(name) + "/approve",
        reject_url=links.app(name) + "/reject",
    )


def revisions_of(status: AppStatus | None, *, history: bool) -> list[str]:
    """The SHAs a page shows of an app: the desired one, and those of its history."""
    if status is None:
        return []
    shas = [status.desired_revision] if status.desired_revision else []
    if history:
        shas += [entry.revision for entry in status.history]
    return list(dict.fromkeys(shas))


def app_view(
    name: str,
    status: AppStatus | None,
    app: AppConfig | None,
    links: Links,
    *,
    subjects: Mapping[str, str] | None = None,
    now: datetime | None = None,
    owner: Owner | None = None,
) -> AppView:
    """One app as the pages show it. An app not yet started (no status) is shown Pending,
    one whose owner published a status this daemon cannot read in the phase "Unknown".
    `subjects` maps the SHAs whose commit subjects are known to them."""
    subjects = subjects or {}
    now = now or utcnow()
    status = status or AppStatus(name=name, last_transition=now)
    phase = status.phase.value
    if owner is not None and owner.unreadable is not None:
        phase = UNKNOWN
    repo = app.repo if app is not None else ""
    return AppView(
        name=name,
        page_url=links.app(name),
        sync_url=links.sync(name),
        phase=phase,
        phase_class=phase_class(phase),
        busy=status.phase in BUSY,
        branch=app.branch if app is not None else "",
        repo=redact_url(repo),
        commit_prefix=links.commit_prefix(repo) if repo else None,
        revision=revision(repo, status.desired_revision, subjects, links),
        desired_image=status.desired_image,
        live_image=status.live_image,
        live_task_definition=status.live_task_definition,
        since=Moment.of(status.last_transition, now),
        error=status.last_error,
        error_line=first_line(status.last_error),
        history=[history_row(repo, entry, now, subjects, links) for entry in status.history],
        rollout=fields_of(status.rollout) if status.rollout is not None else None,
        owner=owner,
        drift=status.drift.changes if status.drift is not None else (),
        drift_since=Moment.of(status.drift.since, now) if status.drift is not None else None,
        approval=approval_of(status, links, name, now),
        parts=[
            Part(p.kind, p.name, p.phase.value, phase_class(p.phase.value), p.task_definition)
            for p in status.parts
        ],
        frozen=(
            Frozen(status.frozen.reason, Moment.of(status.frozen.until, now))
            if status.frozen is not None and status.phase is Phase.FROZEN
            else None
        ),
        analysis=analysis_of(status),
    )
