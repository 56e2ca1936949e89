"""The registry adapter the reconciler holds: tag checks, new tags and image copies, over one
HTTP session."""

from __future__ import annotations

from reconciler.adapters.registry.auth import RegistryAuth
from reconciler.adapters.registry.blobs import Blobs
from reconciler.adapters.registry.copy import ImageCopier
from reconciler.adapters.registry.manifests import Manifests
from reconciler.adapters.registry.tags import Tags
from reconciler.adapters.registry.transport import Transport


class Registry:
    """Asks the registry an image is pushed to whether a tag exists, adds tags there, and
    copies images between repositories and registries.

    One aiohttp session, created on first use (a session belongs to the running event loop)
    and shared by every app's pass; `timeout` bounds each request, and how long a blob
    transfer may make no progress.
    """

    def __init__(self, *, timeout: float = 10.0) -> None:
        self._transport = Transport(timeout=timeout)
        manifests = Manifests(self._transport)
        self._tags = Tags(self._transport, manifests)
        self._copier = ImageCopier(manifests, Blobs(self._transport))

    async def has_tag(
        self, *, registry: str, repository: str, tag: str, auth: RegistryAuth | None
    ) -> bool:
        """Whether `registry` serves `repository:tag` (see `Tags.has_tag`)."""
        return await self._tags.has_tag(
            registry=registry, repository=repository, tag=tag, auth=auth
        )

    async def digest(
        self, *, registry: str, repository: str, tag: str, auth: RegistryAuth | None
    ) -> str | None:
        """The digest `repository:tag` names now, None without it (see `Tags.digest`)."""
        return await self._tags.digest(registry=registry, repository=repository, tag=tag, auth=auth)

    async def retag(
        self, *, registry: str, repository: str, tag: str, new_tag: str, auth: RegistryAuth | None
    ) -> str:
        """Put `repository:tag` under `new_tag` as well; its digest (see `Tags.retag`)."""
        return await self._tags.retag(
            registry=registry, repository=repository, tag=tag, new_tag=new_tag, auth=auth
        )

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
        """Copy `source_repository:tag` to `target_repository:tag`; the digest in the target
        (see `ImageCopier.copy`)."""
        return await self._copier.copy(
            source_registry=source_registry,
            source_repository=source_repository,
            tag=tag,
            target_registry=target_registry,
            target_repository=target_repository,
            source_auth=source_auth,
            target_auth=target_auth,
        )

    async def close(self) -> None:
        """Close the HTTP session; the next call opens a new one."""
        await self._transport.close()
