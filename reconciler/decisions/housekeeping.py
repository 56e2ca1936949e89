"""Housekeeping decisions: which of an app's task definition revisions and images may go.

Pure: no I/O. The stage (app/stages/housekeeping.py) reads what exists, asks these functions, and
removes what they select.

Task definitions. Only revisions the daemon registered for this app are ever candidates:
those tagged `reconciler:app = <app>`; a revision registered by hand or by another tool is
never deregistered. Of the candidates, the newest `keep` by revision number stay, whatever
else is true of them, and every protected revision stays as well (the live one, those in
the service's deployments or in a service deployment in flight, a hold's rollback target).
Protected revisions do not use up the `keep` places: with a rollback in the history the
service may run a revision older than the newest ones, and then the newest `keep` *and* the
running one stay.

Images. Only images whose one and only tag is a full commit SHA are candidates: an image
with a second tag (`latest`, an extra tag) or without any tag is never deleted. Of the
images that carry a SHA tag, the newest `keep` by push time stay, whatever else is true of
them, and so does every image a task definition that stays names, by tag or by digest.

`keep == 0` means the app's housekeeping is off: nothing is selected.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

# Set on every task definition the daemon registers; its value is the app's name.
APP_TAG = "reconciler:app"
SHA_TAG = re.compile(r"[0-9a-f]{40}")

# Why something stays; the report shows these words.
KEPT_OFF = "housekeeping off"
KEPT_NEWEST = "newest"
KEPT_NOT_OURS = "not registered by reconciler for this app"
KEPT_NOT_FAMILY = "not of the live family"
KEPT_EXTRA_TAG = "has another tag"
KEPT_UNTAGGED = "untagged"
KEPT_NOT_SHA = "tag is not a commit SHA"
KEPT_REFERENCED = "named by a task definition that stays"
KEPT_NO_PUSH_TIME = "push time unknown"


@dataclass(frozen=True)
class TaskDefinitionRevision:
    """One ACTIVE revision of a task definition family, as DescribeTaskDefinition tells it."""

    arn: str
    family: str
    revision: int
    tags: Mapping[str, str] = field(default_factory=dict)
    registered_at: datetime | None = None
    images: tuple[str, ...] = ()  # every container's `image`


@dataclass(frozen=True)
class StoredImage:
    """One image (manifest) in an ECR repository, as DescribeImages tells it."""

    digest: str
    tags: tuple[str, ...] = ()
    pushed_at: datetime | None = None


@dataclass(frozen=True)
class Deleted:
    """What BatchDeleteImage did with one digest: error is None when it is gone."""

    digest: str
    error: str | None = None


T = TypeVar("T")


@dataclass(frozen=True)
class Plan(Generic[T]):
    """What to remove, and what stays with the reason it stays, newest first."""

    remove: tuple[T, ...] = ()
    keep: tuple[tuple[T, str], ...] = ()

    def reason(self, item: T) -> str | None:
        """Why `item` stays; None when it goes (or was never considered)."""
        return next((why for kept, why in self.keep if kept == item), None)


def revision_key(arn: str) -> str:
    """`family:revision` of a task definition ARN (or of `family:revision` itself).

    The service, its deployments and a hold may name one revision by its full ARN or by
    `family:revision`; both compare equal under this key.
    """
    return arn.rpartition("task-definition/")[2] or arn


def family_of(arn: str) -> str:
    """The family of a task definition ARN or `family:revision`."""
    return revision_key(arn).rpartition(":")[0]


def choose_task_definitions(
    candidates: Iterable[TaskDefinitionRevision],
    *,
    app: str,
    keep: int,
    protected: Mapping[str, str],
    family: str | None = None,
) -> Plan[TaskDefinitionRevision]:
    """Which revisions to deregister.

    `candidates` are the ACTIVE revisions of the app's family; `protected` maps the ARN (or
    `family:revision`) of every revision that must stay to why. With `family`, a revision of
    any other family stays too.
    """
    if keep < 0:
        raise ValueError("keep must be at least 0")
    shielded = {revision_key(arn): why for arn, why in protected.items()}
    ordered = sorted(candidates, key=lambda c: (c.revision, c.arn), reverse=True)
    remove: list[TaskDefinitionRevision] = []
    kept: list[tuple[TaskDefinitionRevision, str]] = []
    ours = 0
    for revision in ordered:
        why = shielded.get(revision_key(revision.arn))
        if keep == 0:
            why = why or KEPT_OFF
        elif family is not None and revision.family != family:
            why = why or KEPT_NOT_FAMILY
        elif revision.tags.get(APP_TAG) != app:
            why = why or KEPT_NOT_OURS
        else:
            # Counted whether protected or not: the newest `keep` stay in any case.
            ours += 1
            if ours <= keep:
                why = KEPT_NEWEST if why is None else f"{KEPT_NEWEST}, {why}"
        if why is None:
            remove.append(revision)
        else:
            kept.append((revision, why))
    return Plan(remove=tuple(remove), keep=tuple(kept))


def reference_parts(image: str) -> tuple[str | None, str | None]:
    """The tag and the digest an image reference names (either may be None).

    `host:5000/team/web:abc` -> ("abc", None); `web@sha256:d` -> (None, "sha256:d");
    `web:abc@sha256:d` -> ("abc", "sha256:d"); `web` -> (None, None): a reference without a
    tag means `latest` to Docker, and `latest` is never a candidate anyway.
    """
    name, at, digest = image.partition("@")
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    tag = name[colon + 1 :] if colon > last_slash else None
    return (tag or None), (digest if at and digest else None)


def choose_images(
    images: Iterable[StoredImage], *, keep: int, referenced: Iterable[str]
) -> Plan[StoredImage]:
    """Which images to delete (by digest).

    `referenced` holds the `image` of every container of every task definition that stays;
    a referenced tag or digest keeps its image, whatever repository or host it names (a
    registry override may name the same image under another host).
    """
    if keep < 0:
        raise ValueError("keep must be at least 0")
    tags: set[str] = set()
    digests: set[str] = set()
    for reference in referenced:
        tag, digest = reference_parts(reference)
        if tag:
            tags.add(tag)
        if digest:
            digests.add(digest)
    merged = _by_digest(images)
    # Newest first; an image without a push time cannot be ordered and goes last (it stays).
    timed = [i for i in merged if i.pushed_at is not None]
    timed.sort(key=lambda i: (i.pushed_at, i.tags, i.digest), reverse=True)
    ordered = [*timed, *(i for i in merged if i.pushed_at is None)]
    remove: list[StoredImage] = []
    kept: list[tuple[StoredImage, str]] = []
    shas = 0
    for image in ordered:
        if image.pushed_at is not None and any(SHA_TAG.fullmatch(t) for t in image.tags):
            shas += 1  # the newest `keep` SHA-tagged images stay, whatever else they are
        why = KEPT_OFF if keep == 0 else _image_kept(image, newest=shas <= keep)
        if why is None:
            why = KEPT_REFERENCED if image.digest in digests or tags & set(image.tags) else None
        if why is None:
            remove.append(image)
        else:
            kept.append((image, why))
    return Plan(remove=tuple(remove), keep=tuple(kept))


def _image_kept(image: StoredImage, *, newest: bool) -> str | None:
    """Why an image stays by its own tags and age; None when only references could keep it."""
    if not image.tags:
        return KEPT_UNTAGGED
    if not any(SHA_TAG.fullmatch(t) for t in image.tags):
        return KEPT_NOT_SHA
    if image.pushed_at is None:
        return KEPT_NO_PUSH_TIME
    if newest:
        return KEPT_NEWEST
    if len(image.tags) > 1:
        return KEPT_EXTRA_TAG
    return None


def _by_digest(images: Iterable[StoredImage]) -> list[StoredImage]:
    """One entry per digest, with every tag any entry of it carries.

    Deleting by digest removes every tag of that manifest, so an image counts as having an
    extra tag if any listing of its digest shows one.
    """
    found: dict[str, StoredImage] = {}
    for image in images:
        before = found.get(image.digest)
        if before is None:
            found[image.digest] = StoredImage(
                digest=image.digest,
                tags=tuple(dict.fromkeys(image.tags)),
                pushed_at=image.pushed_at,
            )
            continue
        pushed = [t for t in (before.pushed_at, image.pushed_at) if t is not None]
        found[image.digest] = StoredImage(
            digest=image.digest,
            tags=tuple(dict.fromkeys((*before.tags, *image.tags))),
            pushed_at=max(pushed) if pushed else None,
        )
    return list(found.values())


def referenced_images(definitions: Collection[TaskDefinitionRevision]) -> set[str]:
    """Every container image the given task definitions name."""
    return {image for definition in definitions for image in definition.images}
