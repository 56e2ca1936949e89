"""Tags: whether one exists in the registry an image is pushed to, and adding another.

"The tag exists" is a question for the registry the image is pushed to, through the OCI
distribution API that ECR, the CNCF registry and Docker Hub all serve, never an ECR-only
list. One HEAD of the manifest answers it without downloading anything. A new tag for an
image that is already there is one GET of its manifest and one PUT of the same bytes: no layer
moves, and the digest stays the same because the bytes do.
"""

from __future__ import annotations

import hashlib

from reconciler.adapters.registry.auth import (
    RegistryAuth,
    basic_authorization,
    parse_bearer_challenge,
    refused,
)
from reconciler.adapters.registry.manifests import MANIFEST_MEDIA_TYPES, Manifests
from reconciler.adapters.registry.transport import (
    Side,
    Transport,
    failed,
    registry_errors,
    registry_url,
)
from reconciler.errors import RegistryUnavailable, StalledError


class Tags:
    """Checks for a tag and adds tags, over a shared transport."""

    def __init__(self, transport: Transport, manifests: Manifests) -> None:
        self._transport = transport
        self._manifests = manifests

    async def has_tag(
        self, *, registry: str, repository: str, tag: str, auth: RegistryAuth | None
    ) -> bool:
        """True when `registry` serves a manifest for `repository:tag`, False on a 404.

        Raises RegistryUnavailable when the registry cannot answer now (connection, timeout,
        5xx, 429) and StalledError when it refuses the credentials.
        """
        url = f"{registry_url(registry)}/v2/{repository}/manifests/{tag}"
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        basic = basic_authorization(auth) if auth else None
        with registry_errors(registry):
            if basic is not None:
                headers["Authorization"] = basic
            status, challenge = await self._transport.head(url, headers=headers)
            bearer = parse_bearer_challenge(challenge) if status == 401 else None
            if bearer is not None:
                # The token service answers for this registry only; retry once with its token.
                token = await self._transport.token(registry, repository, bearer, basic)
                headers["Authorization"] = f"Bearer {token}"
                status, _ = await self._transport.head(url, headers=headers)
        return self._answer(registry, status)

    async def retag(
        self, *, registry: str, repository: str, tag: str, new_tag: str, auth: RegistryAuth | None
    ) -> str:
        """Put the manifest of `repository:tag` under `new_tag` as well; its digest.

        The exact bytes go back with the media type they came with, so the digest under
        `new_tag` is the digest under `tag`, and an index stays an index. Raises StalledError
        when `tag` does not exist or the credentials are refused, RegistryUnavailable when the
        registry cannot answer now.
        """
        base = f"{registry_url(registry)}/v2/{repository}/manifests"
        side = Side(registry, repository, auth, "pull")
        basic = side.basic
        got, media_type = await self._manifests.get(
            side, tag, missing=f"registry {registry} has no {repository}:{tag} to tag as {new_tag}"
        )
        with registry_errors(registry):
            put_headers = {"Content-Type": media_type}
            if got.authorization is not None:
                # A pull token may not allow the push; a refusal brings a challenge for one.
                put_headers["Authorization"] = got.authorization
            put = await self._transport.exchange(
                "PUT",
                f"{base}/{new_tag}",
                registry=registry,
                repository=repository,
                headers=put_headers,
                basic=basic,
                actions="pull,push",
                data=got.body,
            )
            if put.status not in (200, 201, 202):
                raise failed(registry, put, auth, f"tag {repository}:{new_tag}")
        return (
            put.headers.get("Docker-Content-Digest")
            or got.headers.get("Docker-Content-Digest")
            or "sha256:" + hashlib.sha256(got.body).hexdigest()
        )

    async def digest(
        self, *, registry: str, repository: str, tag: str, auth: RegistryAuth | None
    ) -> str | None:
        """The digest of the manifest `repository:tag` names now, None when there is none.

        One HEAD where the registry names the digest (the distribution spec's
        Docker-Content-Digest); else the manifest's bytes, hashed here. Raises as `has_tag`.
        """
        side = Side(registry, repository, auth, "pull")
        found, digest = await self._manifests.head(side, tag)
        if not found:
            return None
        if digest:
            return digest
        got, _ = await self._manifests.get(
            side, tag, missing=f"registry {registry} has no {repository}:{tag}"
        )
        return "sha256:" + hashlib.sha256(got.body).hexdigest()

    @staticmethod
    def _answer(registry: str, status: int) -> bool:
        if status == 200:
            return True
        if status == 404:
            return False
        if status in (401, 403):
            raise refused(registry, status)
        if status == 429 or status >= 500:
            raise RegistryUnavailable(f"registry {registry} answered HTTP {status}")
        # Any other answer (400 for a malformed name, say) will not change by retrying.
        raise StalledError(f"registry {registry} answered HTTP {status} to a manifest check")
