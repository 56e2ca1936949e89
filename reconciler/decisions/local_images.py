"""Which of an app's images on a build host's engine may go once a rollout succeeded.

Pure: no I/O. Every image the daemon builds is labelled `reconciler.app = <app>` (the
production image and the test stage's), so images of other apps, and images made by hand or
another tool, are never candidates, even in a repository apps share. Of an app's images only
tags that name a revision (a full commit SHA) go: the live revision's and the previous one's
stay, so does every other tag (the cache image's `cache-<target>`, a human's `debug`). A tag
is removed, not the image: an image with another tag left keeps it, and the engine deletes
an image with its last tag.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from reconciler.decisions.housekeeping import SHA_TAG

# Set on every image the daemon builds; its value is the app's name.
APP_LABEL = "reconciler.app"


@dataclass(frozen=True)
class LocalImage:
    """An image on the engine: its ID and its `repository:tag` names."""

    image_id: str
    tags: tuple[str, ...]


def revision_of(image: str) -> str | None:
    """The revision an image reference's tag names, if it names one."""
    name, colon, tag = image.split("@", 1)[0].rpartition(":")
    if not colon or "/" in tag or not name:
        return None
    return tag if SHA_TAG.fullmatch(tag) else None


def stale_tags(images: Iterable[LocalImage], *, keep: Collection[str]) -> list[str]:
    """The tags to remove: those naming a revision not in `keep`, in a stable order."""
    stale = {
        tag
        for image in images
        for tag in image.tags
        if (revision := revision_of(tag)) is not None and revision not in keep
    }
    return sorted(stale)
