"""Copying an image from one repository to another, possibly in another registry (another
AWS account's ECR): how promotion between accounts moves an image without rebuilding it.

Every manifest an index lists goes over before the index, and every blob a manifest names
before the manifest, so the target never holds a manifest whose contents are missing. The
manifest bytes go in unchanged, so the digest the target answers with is the digest that was
tested; a target whose tag already names it costs one HEAD.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import structlog

from reconciler.adapters.registry.auth import RegistryAuth
from reconciler.adapters.registry.blobs import Blobs
from reconciler.adapters.registry.manifests import (
    INDEX_MEDIA_TYPES,
    Manifests,
    descriptors,
    digest_of,
    non_distributable,
    shown,
)
from reconciler.adapters.registry.transport import Answer, Side
from reconciler.errors import StalledError

# An index of indexes is legal; deeper than this is a loop or an attack, not an image.
MAX_INDEX_DEPTH = 4

log = structlog.get_logger("reconciler.registry")


@dataclass
class _Copy:
    """One copy under way: its two ends, and what it did (for its log line)."""

    source: Side
    target: Side
    mount: bool  # both ends in one registry: blobs are mounted, not streamed
    manifests: int = 0  # manifests put into the target
    present: int = 0  # blobs and child manifests the target already had
    mounted: int = 0
    streamed: int = 0
    bytes_streamed: int = 0
    seen: set[str] = field(default_factory=set)  # digests handled, shared layers once


class ImageCopier:
    """Copies a tag's manifests and blobs from one repository to another."""

    def __init__(self, manifests: Manifests, blobs: Blobs) -> None:
        self._manifests = manifests
        self._blobs = blobs

    async def copy(
        self,
        *,
        source_registry: str,
        source_repository: str,
        tag: str,
        target_registry: str,
        target_repository: str,
        source_auth: RegistryAuth | None,
        target_auth: RegistryAuth | None,
    ) -> str:
        """Copy `source_repository:tag` to `target_repository:tag`; the digest in the target.

        The digest is the source's: the manifest bytes go over unchanged, after every manifest
        an index lists and every blob a manifest names. Blobs the target has are skipped, and
        within one registry the rest are mounted from the source repository; otherwise they
        stream through this process a chunk at a time, checked against their digests. When
        the target's tag already names the source's digest, nothing is copied.

        Raises StalledError when the source has no such tag, a registry refuses the
        credentials (naming which), or bytes do not match their digest; RegistryUnavailable
        when either registry cannot answer now.
        """
        mount = source_registry.lower() == target_registry.lower()
        source = Side(source_registry, source_repository, source_auth, "pull")
        pushing: tuple[str, ...] = (f"repository:{target_repository}:pull,push",)
        if mount:
            # A mount reads the source repository with the target's token.
            pushing += (f"repository:{source_repository}:pull",)
        target = Side(target_registry, target_repository, target_auth, "pull,push", pushing)
        where = f"{target_registry}/{target_repository}:{tag}"
        got, media_type = await self._manifests.get(
            source,
            tag,
            missing=f"registry {source_registry} has no {source_repository}:{tag} to copy to "
            f"{where}",
        )
        digest = digest_of(source, got, tag)
        described = {
            "source": f"{source_registry}/{source_repository}:{tag}",
            "target": where,
            "digest": digest,
        }
        present, current = await self._manifests.head(target, tag)
        if present and current == digest:
            log.info("image_already_copied", **described)
            return digest
        job = _Copy(source, target, mount)
        await self._references(job, tag, got, media_type, 0)
        stored = await self._manifests.put(target, tag, got.body, media_type)
        if stored != digest:
            raise StalledError(
                f"registry {target_registry} stored {where} as {stored}, not as the source's "
                f"{digest}"
            )
        job.manifests += 1
        log.info(
            "image_copied",
            **described,
            manifests=job.manifests,
            present=job.present,
            mounted=job.mounted,
            streamed=job.streamed,
            bytes_streamed=job.bytes_streamed,
        )
        return digest

    async def _references(
        self, job: _Copy, reference: str, got: Answer, media_type: str, depth: int
    ) -> None:
        """Copy what the manifest in `got` refers to: child manifests, or config and layers."""
        source = job.source
        try:
            document = json.loads(got.body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise StalledError(
                f"registry {source.registry} sent {shown(source.repository, reference)} "
                "as something other than a JSON manifest"
            )
        if media_type in INDEX_MEDIA_TYPES:
            if depth >= MAX_INDEX_DEPTH:
                raise StalledError(
                    f"registry {source.registry} sent indexes nested over {MAX_INDEX_DEPTH} "
                    f"deep under {source.repository}"
                )
            for child, _, _ in descriptors(source, reference, document.get("manifests", [])):
                await self._child(job, child, depth + 1)
            return
        blobs = [document.get("config"), *(document.get("layers") or [])]
        for digest, size, blob_type in descriptors(source, reference, blobs):
            if not non_distributable(blob_type):
                await self._blob(job, digest, size)

    async def _child(self, job: _Copy, digest: str, depth: int) -> None:
        source, target = job.source, job.target
        if digest in job.seen:
            return
        job.seen.add(digest)
        present, _ = await self._manifests.head(target, digest)
        if present:
            # A registry keeps a manifest only once everything it names is there.
            job.present += 1
            return
        got, media_type = await self._manifests.get(
            source,
            digest,
            missing=f"registry {source.registry} has no {source.repository}@{digest}, which "
            "an index being copied lists",
        )
        digest_of(source, got, digest)
        await self._references(job, digest, got, media_type, depth)
        stored = await self._manifests.put(target, digest, got.body, media_type)
        if stored != digest:
            raise StalledError(
                f"registry {target.registry} stored {target.repository}@{digest} as {stored}"
            )
        job.manifests += 1

    async def _blob(self, job: _Copy, digest: str, size: int) -> None:
        if digest in job.seen:
            return
        job.seen.add(digest)
        copied = await self._blobs.copy(job.source, job.target, digest, size, mount=job.mount)
        if copied.how == "present":
            job.present += 1
        elif copied.how == "mounted":
            job.mounted += 1
        else:
            job.streamed += 1
            job.bytes_streamed += copied.streamed
