"""Local images: once a rollout the pass built for has succeeded, the build host's images of
the app's older revisions are removed, so its disk stays bounded.

Which tags go is decisions/local_images.py: of the images labelled with the app's name (the
production images and the test stages' alike), those naming a revision other than the live
one and the one the service ran before; the cache image's tag, and anything else, stays.
The engine's build cache is not touched (it has its own garbage collection: `builder.gc` in
daemon.json). Nothing here fails a deploy: what cannot be listed or removed is said in the
log and left for the next rollout.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from reconciler.app.stages.context import PassContext
from reconciler.decisions.local_images import APP_LABEL, revision_of, stale_tags
from reconciler.errors import ReconcilerError

log = structlog.get_logger("reconciler.pass")


async def remove_old_local_images(ctx: PassContext, *, previous: Iterable[str]) -> None:
    """Remove the app's local images but the pass's revision's and those of `previous` (the
    images the service ran before the rollout)."""
    keep = {ctx.revision} | {r for image in previous if (r := revision_of(image))}
    try:
        images = await ctx.io.docker.local_images(label=f"{APP_LABEL}={ctx.app.name}")
    except ReconcilerError as exc:
        log.warning("local_images_not_listed", error=str(exc))
        return
    removed = failed = 0
    for tag in stale_tags(images, keep=keep):
        try:
            await ctx.io.docker.remove_image(tag)
        except ReconcilerError as exc:
            log.warning("local_image_not_removed", image=tag, error=str(exc))
            failed += 1
            continue
        removed += 1
    if removed or failed:
        log.info("local_images_removed", removed=removed, failed=failed, kept=sorted(keep))
