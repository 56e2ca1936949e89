"""Approvals: bound to a revision and a digest, counted per identity, superseded, lapsing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.decisions.approval import (
    ApprovalRefused,
    ApprovalRequest,
    Gate,
    Vote,
    decide,
    gate,
    may_approve,
    request_for,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
REV = "a" * 40
NEWER = "b" * 40
DIGEST = "sha256:" + "1" * 64
OTHER_DIGEST = "sha256:" + "2" * 64
WAITING = ApprovalRequest(
    revision=REV, digest=DIGEST, required=2, requested_at=NOW, expires_at=NOW + DAY
)


def vote(request: ApprovalRequest | None, by: str, **changes: object) -> ApprovalRequest:
    args: dict[str, object] = {
        "app": "web",
        "by": by,
        "approvers": ("alice", "bob", "carol"),
        "revision": REV,
        "digest": DIGEST,
        "comment": "",
        "approve": True,
        "now": NOW + timedelta(hours=1),
    }
    args.update(changes)
    return decide(request, **args)  # type: ignore[arg-type]


def test_a_request_for_the_same_revision_and_digest_is_kept() -> None:
    """A later pass finds the waiting request, approvals and deadline unchanged."""
    approved = replace(WAITING, approvals=(Vote("alice", NOW),))
    again = request_for(
        approved, revision=REV, digest=DIGEST, required=2, expire_after=DAY, now=NOW + DAY / 2
    )
    assert again == approved


@pytest.mark.parametrize(
    ("revision", "digest"),
    [(NEWER, DIGEST), (REV, OTHER_DIGEST)],
    ids=["a newer revision", "the tag pushed over"],
)
def test_a_new_revision_or_digest_supersedes_a_waiting_request(revision: str, digest: str) -> None:
    """Approvals given for one image never carry over to another: a new request starts."""
    approved = replace(WAITING, approvals=(Vote("alice", NOW),))
    later = NOW + timedelta(hours=3)
    new = request_for(
        approved, revision=revision, digest=digest, required=2, expire_after=DAY, now=later
    )
    assert (new.revision, new.digest, new.approvals) == (revision, digest, ())
    assert new.expires_at == later + DAY


def test_a_changed_required_count_applies_to_the_waiting_request() -> None:
    """A reload that asks for fewer approvals can release a request already waiting."""
    approved = replace(WAITING, approvals=(Vote("alice", NOW),))
    lowered = request_for(
        approved, revision=REV, digest=DIGEST, required=1, expire_after=DAY, now=NOW
    )
    assert gate(lowered, NOW) is Gate.APPROVED


# (what it shows, approvals, rejected, instant, gate)
GATES = [
    ("no approval yet", (), None, NOW, Gate.WAITING),
    ("one of two", ("alice",), None, NOW, Gate.WAITING),
    ("two distinct", ("alice", "bob"), None, NOW, Gate.APPROVED),
    ("approved in time stays approved", ("alice", "bob"), None, NOW + 2 * DAY, Gate.APPROVED),
    ("at the deadline, unapproved", ("alice",), None, NOW + DAY, Gate.EXPIRED),
    ("a second before it", ("alice",), None, NOW + DAY - timedelta(seconds=1), Gate.WAITING),
    ("rejected beats approved", ("alice", "bob"), "carol", NOW, Gate.REJECTED),
]


@pytest.mark.parametrize(
    ("approvals", "rejected", "at", "expected"),
    [g[1:] for g in GATES],
    ids=[g[0] for g in GATES],
)
def test_the_gate(
    approvals: tuple[str, ...], rejected: str | None, at: datetime, expected: Gate
) -> None:
    request = replace(
        WAITING,
        approvals=tuple(Vote(by, NOW) for by in approvals),
        rejected=Vote(rejected, NOW) if rejected else None,
    )
    assert gate(request, at) is expected


def test_an_identity_counts_once() -> None:
    """Alice approving twice is one approval: a second identity is still needed."""
    once = vote(WAITING, "alice", comment="looks good")
    twice = vote(once, "alice")
    assert twice == once
    assert gate(twice, NOW) is Gate.WAITING
    both = vote(twice, "bob")
    assert [v.by for v in both.approvals] == ["alice", "bob"]
    assert both.approvals[0].comment == "looks good"
    assert gate(both, NOW) is Gate.APPROVED


def test_a_short_revision_prefix_and_no_digest_name_the_waiting_request() -> None:
    """`reconciler approve web --revision aaaaaaa` is enough; a digest, when given, must match."""
    assert vote(WAITING, "alice", revision=REV[:7], digest=None).approvals[0].by == "alice"


def test_a_rejection_is_recorded_with_its_comment() -> None:
    rejected = vote(WAITING, "carol", approve=False, comment="not on a Friday")
    assert rejected.rejected == Vote("carol", NOW + timedelta(hours=1), "not on a Friday")
    assert gate(rejected, NOW) is Gate.REJECTED


def test_anyone_approves_when_no_approvers_are_named() -> None:
    """Empty `approvers`: the role check (operator of the app) is the whole rule."""
    assert may_approve("dave", ())
    assert not may_approve("dave", ("alice",))


# (what it shows, request, changes to the call, status, words in the message)
REFUSALS: list[tuple[str, ApprovalRequest | None, dict[str, object], int, str]] = [
    ("not an approver", WAITING, {"approvers": ("bob",)}, 403, "alice is not an approver"),
    ("nothing waits", None, {}, 409, "no release of app 'web' waits"),
    ("another revision", WAITING, {"revision": NEWER}, 409, f"waiting for approval is {REV}"),
    ("a stale digest", WAITING, {"digest": OTHER_DIGEST}, 409, f"(digest {DIGEST})"),
    ("a prefix too short", WAITING, {"revision": REV[:6]}, 409, "waiting for approval is"),
    ("after expiry", WAITING, {"now": NOW + DAY}, 409, "expired at"),
    (
        "after a rejection",
        replace(WAITING, rejected=Vote("carol", NOW)),
        {},
        409,
        "was rejected by carol",
    ),
    (
        "a reject once approved",
        replace(WAITING, approvals=(Vote("alice", NOW), Vote("bob", NOW))),
        {"approve": False},
        409,
        "too late to reject",
    ),
    ("a comment with a newline", WAITING, {"comment": "a\nb"}, 400, "printable text"),
    ("a comment too long", WAITING, {"comment": "x" * 501}, 400, "at most 500"),
]


@pytest.mark.parametrize(
    ("request_", "changes", "status", "words"),
    [r[1:] for r in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
def test_refusals_name_what_waits(
    request_: ApprovalRequest | None, changes: dict[str, object], status: int, words: str
) -> None:
    """A refusal says why, and a 409 names the release that does wait, so a caller can act."""
    with pytest.raises(ApprovalRefused) as caught:
        vote(request_, "alice", **changes)
    assert caught.value.status == status
    assert words in str(caught.value)
