"""When the pass's revision was committed: read from the mirror once per revision, for the
lead time of its release (commit to live). A mirror that cannot say (a shallow or pruned
history, a revision promoted from another app's repository) leaves the time unknown: the
release is recorded without a lead time, never held up for it."""

from __future__ import annotations

import structlog

from reconciler.app.stages.context import PassContext
from reconciler.errors import ReconcilerError

log = structlog.get_logger("reconciler.pass")


async def commit_time(ctx: PassContext) -> None:
    if ctx.report.commit_time_known(ctx.revision):
        return
    try:
        at = await ctx.io.git.commit_time(ctx.session.source, ctx.revision)
    except ReconcilerError as exc:
        log.info("commit_time_unknown", error=str(exc))
        at = None
    ctx.report.committed(revision=ctx.revision, at=at)
