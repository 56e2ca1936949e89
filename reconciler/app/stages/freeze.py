"""The freeze gate (SPEC 21): a new release of a frozen app does not start.

Asked only where a pass would start a release (build, or register and update the service);
a rollback, a rollout already under way and the later parts of a release already past its
first service update go on. The loop wakes at the freeze's end, so the release waiting for it
starts then, not at the next poll.
"""

from __future__ import annotations

import structlog

from reconciler.app.stages.context import PassContext
from reconciler.decisions.freeze import covering
from reconciler.decisions.model import utcnow

log = structlog.get_logger("reconciler.pass")


def frozen(ctx: PassContext) -> bool:
    """Whether a freeze keeps this pass from starting a release (said in the status)."""
    session = ctx.session
    found = covering(session.freezes(), ctx.app.name, utcnow())
    if found is None:
        return False
    override = session.override_freeze
    if override is not None:
        session.override_freeze = None  # one release through, not every one until the end
        log.warning("freeze_overridden", freeze=found.reason, reason=override)
        return False
    log.info("frozen", freeze=found.reason, until=found.until.isoformat())
    session.wake_at = found.until
    ctx.report.frozen(found.reason, until=found.until)
    return True
