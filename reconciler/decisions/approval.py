"""Approvals (SPEC 21): a release waits for people before its service update.

A request binds one revision AND one image digest: an approval given for them counts for
nothing else (a tag pushed over, a newer commit). `required` distinct identities must approve,
each counted once, and only those `approvers` names (empty: any operator of the app, which
the role check decides before this module is asked). A newer revision, or the same one with
another digest, replaces a waiting request; past `expires_at` it lapses unless approved by
then. One rejection ends it.

Pure: the stage (app/stages/approval.py) and the API (daemon/steering.py) hold the I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

__all__ = [
    "MIN_PREFIX",
    "ApprovalRefused",
    "ApprovalRequest",
    "Gate",
    "Vote",
    "decide",
    "gate",
    "may_approve",
    "request_for",
]

MIN_PREFIX = 7  # the shortest revision prefix an approval may name (git's own short form)
MAX_COMMENT = 500


@dataclass(frozen=True)
class Vote:
    """One identity's approval or rejection, with what it said."""

    by: str
    at: datetime
    comment: str = ""


@dataclass(frozen=True)
class ApprovalRequest:
    """The release waiting for approval: what it would put live and who said yes so far."""

    revision: str
    digest: str
    required: int
    requested_at: datetime
    expires_at: datetime
    approvals: tuple[Vote, ...] = ()
    rejected: Vote | None = None

    @property
    def approved(self) -> bool:
        return len({v.by for v in self.approvals}) >= self.required

    def names(self, revision: str, digest: str | None) -> bool:
        """Whether an approval naming `revision` (a prefix of MIN_PREFIX or more will do)
        and `digest` (when given) is one for this request."""
        if len(revision) < MIN_PREFIX or not self.revision.startswith(revision):
            return False
        return digest is None or digest == self.digest


class Gate(enum.Enum):
    """Where a request stands, for the pass that asks."""

    WAITING = "waiting"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


def request_for(
    current: ApprovalRequest | None,
    *,
    revision: str,
    digest: str,
    required: int,
    expire_after: timedelta,
    now: datetime,
) -> ApprovalRequest:
    """The request for releasing `revision` as `digest`: the current one when it is for them
    (its `required` as the config says now), else a new one (a newer revision, or the tag
    pushed over, supersedes a waiting request and its approvals)."""
    if current is not None and (current.revision, current.digest) == (revision, digest):
        return current if current.required == required else replace(current, required=required)
    return ApprovalRequest(
        revision=revision,
        digest=digest,
        required=required,
        requested_at=now,
        expires_at=now + expire_after,
    )


def gate(request: ApprovalRequest, now: datetime) -> Gate:
    """Rejected beats everything; approved in time stays approved; else expiry decides."""
    if request.rejected is not None:
        return Gate.REJECTED
    if request.approved:
        return Gate.APPROVED
    if now >= request.expires_at:
        return Gate.EXPIRED
    return Gate.WAITING


def may_approve(name: str, approvers: tuple[str, ...]) -> bool:
    """Whether `approvers` (empty: any operator, already checked by role) names `name`."""
    return not approvers or name in approvers


class ApprovalRefused(Exception):
    """An approval or rejection that does not apply; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decide(
    request: ApprovalRequest | None,
    *,
    app: str,
    by: str,
    approvers: tuple[str, ...],
    revision: str,
    digest: str | None,
    comment: str,
    approve: bool,
    now: datetime,
) -> ApprovalRequest:
    """The request with `by`'s approval (or rejection) added; ApprovalRefused when `by` is not
    an approver (403), or no request waits for what it names (409, naming the one waiting)."""
    if not may_approve(by, approvers):
        raise ApprovalRefused(403, f"{by} is not an approver of app {app!r}")
    if len(comment) > MAX_COMMENT or not comment.isprintable():
        raise ApprovalRefused(
            400, f"the comment must be printable text of at most {MAX_COMMENT} characters"
        )
    if request is None:
        raise ApprovalRefused(409, f"no release of app {app!r} waits for approval")
    waiting = f"{request.revision} (digest {request.digest})"
    if not request.names(revision, digest):
        raise ApprovalRefused(
            409, f"the release of app {app!r} waiting for approval is {waiting}, not {revision}"
        )
    state = gate(request, now)
    if state is Gate.REJECTED:
        assert request.rejected is not None
        raise ApprovalRefused(409, f"{waiting} was rejected by {request.rejected.by}")
    if state is Gate.EXPIRED:
        raise ApprovalRefused(
            409, f"the request for {waiting} expired at {request.expires_at.isoformat()}"
        )
    if state is Gate.APPROVED and approve:
        return request  # nothing to add: it goes out already
    if state is Gate.APPROVED:
        raise ApprovalRefused(409, f"{waiting} is approved already: too late to reject it")
    vote = Vote(by=by, at=now, comment=comment)
    if not approve:
        return replace(request, rejected=vote)
    if any(v.by == by for v in request.approvals):
        return request  # an identity counts once, however often it approves
    return replace(request, approvals=(*request.approvals, vote))
