"""Manifests: the kinds that can be copied byte for byte, what one says and whether to
believe it, and the GET, HEAD and PUT of one manifest.

A manifest goes back with the exact bytes and media type it came with, so its digest stays
the same; a registry that names another digest than its bytes hash to is a mismatch, not an
image.
"""

from __future__ import annotations

import hashlib
import json
import re

from reconciler.adapters.registry.transport import (
    MANIFEST_LIMIT,
    Answer,
    Side,
    Transport,
    failed,
    registry_errors,
)
from reconciler.errors import StalledError

# Everything index, manifest or list: a multi-arch tag answers with an index, and a registry
# that is not told it may accept one answers 404 for a tag that exists.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)

# The two of those that list other manifests rather than a config and layers.
INDEX_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)

# A digest goes into URL paths, so it must be one (the OCI grammar), and of an algorithm this
# can check, so that a blob is verified while it streams.
_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


def shown(repository: str, reference: str) -> str:
    """`repo:tag` or `repo@digest`, as people write image references."""
    return f"{repository}@{reference}" if ":" in reference else f"{repository}:{reference}"


def _media_type(answer: Answer) -> str | None:
    """The manifest's media type: the Content-Type it was served with, else its mediaType."""
    served = answer.headers.get("Content-Type", "").split(";")[0].strip()
    if served in MANIFEST_MEDIA_TYPES:
        return served
    try:
        declared = json.loads(answer.body).get("mediaType")
    except (ValueError, AttributeError):
        return None
    return declared if declared in MANIFEST_MEDIA_TYPES else None


def digest_of(side: Side, answer: Answer, reference: str) -> str:
    """The digest of a manifest's bytes; a registry naming another digest is a mismatch."""
    named = answer.headers.get("Docker-Content-Digest")
    if ":" in reference:
        named = named or reference
        if named != reference:
            raise StalledError(
                f"registry {side.registry} answered {shown(side.repository, reference)} "
                f"with {named}"
            )
    algorithm = named.partition(":")[0] if named and _DIGEST.match(named) else "sha256"
    computed = f"{algorithm}:{hashlib.new(algorithm, answer.body).hexdigest()}"
    if named is not None and named != computed:
        raise StalledError(
            f"registry {side.registry} sent {shown(side.repository, reference)} as {named}, "
            f"but its bytes hash to {computed}"
        )
    return computed


def descriptors(side: Side, reference: str, items: object) -> list[tuple[str, int, str]]:
    """(digest, size, media type) of each descriptor in `items`; malformed ones stall."""
    if not isinstance(items, list):
        items = [items]
    found: list[tuple[str, int, str]] = []
    for item in items:
        digest = item.get("digest") if isinstance(item, dict) else None
        size = item.get("size") if isinstance(item, dict) else None
        media_type = item.get("mediaType", "") if isinstance(item, dict) else ""
        if (
            not isinstance(digest, str)
            or not _DIGEST.match(digest)
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or not isinstance(media_type, str)
        ):
            raise StalledError(
                f"registry {side.registry} sent a manifest of "
                f"{shown(side.repository, reference)} with a descriptor that is not a "
                "sha256/sha512 digest and a size"
            )
        found.append((digest, size, media_type))
    return found


def non_distributable(media_type: str) -> bool:
    # Foreign layers (Windows base layers) live at their vendor's URLs, not in the source
    # registry; the target fetches them from there the way the source's clients do.
    return "foreign" in media_type or "nondistributable" in media_type


class Manifests:
    """One manifest's GET, HEAD and PUT in a repository, over a shared transport."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def get(self, side: Side, reference: str, *, missing: str) -> tuple[Answer, str]:
        """The manifest `reference` names and the media type to put it back with."""
        where = shown(side.repository, reference)
        with registry_errors(side.registry):
            got = await self._transport.call(
                side,
                "GET",
                f"{side.base}/manifests/{reference}",
                {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
            )
        if got.status == 404:
            raise StalledError(missing)
        if got.status != 200:
            raise failed(side.registry, got, side.auth, f"the manifest of {where}")
        if len(got.body) > MANIFEST_LIMIT:
            raise StalledError(f"registry {side.registry} sent a manifest of {where} over 4 MiB")
        media_type = _media_type(got)
        if media_type is None:
            raise StalledError(
                f"registry {side.registry} sent {where} as "
                f"{got.headers.get('Content-Type') or 'no media type'}, which is not an "
                "image manifest or index that can be copied byte for byte"
            )
        return got, media_type

    async def head(self, side: Side, reference: str) -> tuple[bool, str | None]:
        """Whether `side` has the manifest `reference`, and the digest it names, if it says."""
        with registry_errors(side.registry):
            answer = await self._transport.call(
                side,
                "HEAD",
                f"{side.base}/manifests/{reference}",
                {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
            )
        if answer.status == 404:
            return False, None
        if answer.status != 200:
            raise failed(
                side.registry, answer, side.auth, f"a check of {shown(side.repository, reference)}"
            )
        return True, answer.headers.get("Docker-Content-Digest")

    async def put(self, side: Side, reference: str, body: bytes, media_type: str) -> str:
        """Put `body` under `reference`; the digest the registry stored it as."""
        with registry_errors(side.registry):
            put = await self._transport.call(
                side,
                "PUT",
                f"{side.base}/manifests/{reference}",
                {"Content-Type": media_type},
                data=body,
            )
        if put.status not in (200, 201, 202):
            raise failed(
                side.registry, put, side.auth, f"the manifest {shown(side.repository, reference)}"
            )
        return put.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(body).hexdigest()
        )
