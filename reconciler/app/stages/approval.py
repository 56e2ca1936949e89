"""The approval gate (SPEC 21): a release of an app with `approval` waits for people after its
image is pushed and its task definition registered, before the pre-deploy task and the
service update.

The request is kept in the app's memory, so a restart or a new owner keeps the wait and the
votes. It binds the revision and the digest the registry names for its tag now: a tag pushed
over asks again. The API (daemon/steering.py) adds votes and nudges the loop; the pass that
follows finds them here. The loop also wakes at the deadline: past it, unapproved, the
revision is held (Failed, `approval_expired`); rejected, it is held (Failed, `rejected`).
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from reconciler.app.stages.context import PassContext
from reconciler.app.status import ApprovalView, VoteView
from reconciler.decisions.approval import ApprovalRequest, Gate, gate, request_for
from reconciler.decisions.model import Hold, Result, utcnow
from reconciler.errors import StalledError
from reconciler.logs import redact

log = structlog.get_logger("reconciler.pass")
HOOKED_STRATEGIES = frozenset({"BLUE_GREEN", "LINEAR", "CANARY"})
CHANGES_SHOWN = 50  # lines of the definition's diff in the status, each at most CHANGE_LINE
CHANGE_LINE = 300


async def approved(ctx: PassContext) -> bool:
    """True when the app needs no approval or the release has it (or asks for it later, at
    the lifecycle hook where its service's deployments pause: lifecycle.py); False when it
    waits (the status says for what) or was rejected or lapsed (the revision is held)."""
    if ctx.app.approval is None or pauses_for_gates(ctx):
        return True
    said, reason = await approval_now(ctx)
    if said is None:
        return False
    if not said:
        result = Result.REJECTED if reason.startswith("rejected") else Result.APPROVAL_EXPIRED
        await _hold(ctx, result, reason)
        return False
    return True


def pauses_for_gates(ctx: PassContext) -> bool:
    """Whether the app's gates (approval, analysis) run at a PAUSE lifecycle hook of its
    service's deployments, so production traffic shifts only after them."""
    app = ctx.app
    gated = app.approval is not None or bool(app.analysis)
    rollout = ctx.observed.live.service.rollout
    # ECS runs lifecycle hooks for these strategies only: elsewhere a hook never stops one.
    hooked = rollout.controller == "ECS" and rollout.strategy in HOOKED_STRATEGIES
    return gated and hooked and bool(rollout.pause_stages)


async def approval_now(ctx: PassContext) -> tuple[bool | None, str]:
    """Where the release's approval stands: (True, "") approved, (None, "") waiting (the
    status says for what), (False, why) rejected or lapsed. Nothing is held here."""
    spec = ctx.app.approval
    assert spec is not None
    digest = await _digest(ctx)
    # Read after the await: a vote the API added meanwhile must not be written over.
    memory, now = ctx.memory, utcnow()
    request = request_for(
        memory.approval,
        revision=ctx.revision,
        digest=digest,
        required=spec.required,
        expire_after=timedelta(seconds=spec.expire_after),
        now=now,
    )
    if request != memory.approval:
        if memory.approval is not None and memory.approval.revision != request.revision:
            log.info("approval_superseded", older=memory.approval.revision)
        memory.approval = request
        # A request not written would be asked again after a restart, its votes lost: the
        # release waits either way, so a failed write is only reported.
        await ctx.session.save()
        log.info("approval_requested", digest=request.digest, required=request.required)
    match gate(request, now):
        case Gate.APPROVED:
            log.info("approved", by=[v.by for v in request.approvals])
            return True, ""
        case Gate.WAITING:
            ctx.session.wake_at = request.expires_at
            ctx.report.awaiting_approval(_view(ctx, request))
            if ctx.memory.timeline != ctx.report.release_stages():
                await ctx.session.save()  # the wait's start, for a daemon that goes on
            return None, ""
        case Gate.REJECTED:
            assert request.rejected is not None
            vote = request.rejected
            said = f": {vote.comment}" if vote.comment else ""
            return False, f"rejected by {vote.by}{said}"
        case Gate.EXPIRED:
            when = request.expires_at.isoformat(timespec="seconds")
            return False, f"no approval before {when}"
    raise AssertionError("unhandled gate")  # pragma: no cover


async def _digest(ctx: PassContext) -> str:
    image = ctx.observed.desired.image
    digest = await ctx.io.registry.digest(
        registry=image.registry,
        repository=image.repository,
        tag=image.tag,
        auth=await ctx.io.ecr.auth(),
    )
    if digest is None:
        # Pushed in this pass or found there by the plan: gone since, by someone else's hand.
        raise StalledError(f"image {image} is no longer in its registry; nothing to approve")
    return digest


def _view(ctx: PassContext, request: ApprovalRequest) -> ApprovalView:
    state = ctx.observed.definition
    found = state.changes[:CHANGES_SHOWN] if state is not None else ()
    changes = tuple(redact(c.describe())[:CHANGE_LINE] for c in found)
    return ApprovalView(
        revision=request.revision,
        digest=request.digest,
        required=request.required,
        expires_at=request.expires_at,
        approvals=[VoteView(by=v.by, at=v.at, comment=v.comment) for v in request.approvals],
        changes=changes,
    )


async def _hold(ctx: PassContext, result: Result, reason: str) -> None:
    """Hold the revision: nothing of it reached the service, and it goes out only after a
    sync (which asks again) or a newer revision."""
    memory = ctx.memory
    log.warning("approval_refused", result=result.value, reason=reason)
    memory.hold = Hold(
        revision=ctx.revision, reason=reason, config_fingerprint=ctx.app.fingerprint()
    )
    await ctx.session.save()
    await ctx.report.outcome(
        revision=ctx.revision, result=result, started_at=ctx.started_at, error=reason
    )
    ctx.report.failed(reason)
    ctx.report.count(result.value)
