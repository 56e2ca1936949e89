"""Supersede: has a newer revision turned up? Asked again before writes and during a watch.

Two pushes in quick succession must end with the newer live and never the older after it, so
a pass asks git again after a build, before UpdateService when a nudge came meanwhile, and
while it watches a rollout.
"""

from __future__ import annotations

import structlog

from reconciler.app.stages.context import PassContext
from reconciler.app.stages.resolve import desired_revision
from reconciler.decisions.model import Result

log = structlog.get_logger("reconciler.pass")


async def superseded(ctx: PassContext, *, event: str = "superseded_before_deploy") -> bool:
    """Ask git again; True (and recorded) when the desired revision moved on."""
    latest = await desired_revision(ctx.session)
    if latest == ctx.revision:
        return False
    log.info(event, newer=latest)
    await ctx.report.outcome(
        revision=ctx.revision,
        result=Result.SUPERSEDED,
        started_at=ctx.started_at,
        error=f"superseded by {latest}",
    )
    return True
