"""Blobs: whether a repository has one, and getting it there when it does not.

Within one registry a blob is mounted from the source repository; when the registry cannot
mount it (the blob is not where it looked, or the token may not read there) it starts an
ordinary upload instead. Between registries, and into such an upload, the blob streams from
the source's GET into the target's upload a chunk at a time, checked against its digest and
size as it goes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from reconciler.adapters.registry.auth import parse_bearer_challenge, refused
from reconciler.adapters.registry.transport import (
    ERROR_BODY_LIMIT,
    TRANSPORT_ERRORS,
    Answer,
    Side,
    Transport,
    failed,
    registry_errors,
    registry_url,
)
from reconciler.errors import RegistryUnavailable, StalledError

# Blobs travel in pieces of at most this size; with aiohttp's read-ahead and the piece held
# back until the digest is known, a copy holds a few MiB whatever the layer's size.
BLOB_CHUNK = 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


class _BlobMismatch(Exception):
    """Raised inside an upload's body when the bytes do not match their descriptor."""


_UPLOAD_ERRORS: tuple[type[Exception], ...] = (_BlobMismatch, *TRANSPORT_ERRORS)


class _Rechallenged(Exception):
    """A token expired while a blob streamed; the stream cannot be replayed, the blob can."""


class _BlobStream:
    """The body of one blob's upload: the source's bytes, checked against the descriptor.

    The last piece is held back until the digest of everything is known: a blob that does not
    match never reaches the target whole, so its upload fails there instead of waiting, complete
    and wrong, for a commit.
    """

    def __init__(self, digest: str, size: int, on_progress: Callable[[], None]) -> None:
        self.digest = digest
        self.size = size
        self.moved = 0
        self.problem: str | None = None
        self.source_error: BaseException | None = None
        self._on_progress = on_progress

    async def chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        algorithm, _, expected = self.digest.partition(":")
        hasher = hashlib.new(algorithm)
        held: bytes | None = None
        try:
            async for chunk in response.content.iter_chunked(BLOB_CHUNK):
                self.moved += len(chunk)
                if self.moved > self.size:
                    self.problem = f"is longer than the {self.size} bytes its descriptor gives"
                    raise _BlobMismatch(self.problem)
                hasher.update(chunk)
                self._on_progress()
                if held is not None:
                    yield held
                held = chunk
        except TRANSPORT_ERRORS as exc:
            self.source_error = exc
            raise
        if self.moved != self.size:
            self.problem = f"has {self.moved} bytes where its descriptor gives {self.size}"
            raise _BlobMismatch(self.problem)
        if hasher.hexdigest() != expected:
            self.problem = f"hashes to {algorithm}:{hasher.hexdigest()}"
            raise _BlobMismatch(self.problem)
        if held is not None:
            yield held


@dataclass(frozen=True)
class BlobCopied:
    """How one blob reached the target, and the bytes that went through this process."""

    how: Literal["present", "mounted", "streamed"]
    streamed: int = 0


class Blobs:
    """Checks for, mounts and streams blobs, over a shared transport."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def copy(
        self, source: Side, target: Side, digest: str, size: int, *, mount: bool
    ) -> BlobCopied:
        """Get blob `digest` of `source` into `target`, unless it is there already."""
        blob = f"{target.base}/blobs/{digest}"
        with registry_errors(target.registry):
            answer = await self._transport.call(target, "HEAD", blob)
        if answer.status == 200:
            return BlobCopied("present")
        if answer.status != 404:
            raise failed(target.registry, answer, target.auth, f"a check of blob {digest} there")
        location: str | None = None
        if mount:
            uploads = URL(f"{target.base}/blobs/uploads/")
            mounting = uploads.with_query({"mount": digest, "from": source.repository})
            with registry_errors(target.registry):
                answer = await self._transport.call(target, "POST", str(mounting))
            if answer.status == 201:
                return BlobCopied("mounted")
            if answer.status != 202:
                raise failed(target.registry, answer, target.auth, f"a mount of blob {digest}")
            # The registry could not mount (the blob is not where it looked, or the token may
            # not read there) and started an ordinary upload instead: stream into that one.
            location = answer.headers.get("Location")
        try:
            moved = await self._stream(source, target, digest, size, location)
        except _Rechallenged:
            # A new upload takes a new token; a second expiry is a registry refusing it.
            try:
                moved = await self._stream(source, target, digest, size, None)
            except _Rechallenged:
                raise refused(target.registry, 401) from None
        return BlobCopied("streamed", moved)

    async def _stream(
        self, source: Side, target: Side, digest: str, size: int, location: str | None
    ) -> int:
        """Stream one blob from `source` into an upload in `target`; the bytes moved."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._transport.idle) as stall:

                def progress() -> None:
                    stall.reschedule(loop.time() + self._transport.idle)

                if location is None:
                    location = await self._start_upload(target, digest)
                progress()
                upload = URL(f"{registry_url(target.registry)}/v2/").join(URL(location))
                async with self._download(source, digest) as response:
                    progress()
                    stream = _BlobStream(digest, size, progress)
                    patched = await self._patch(source, target, upload, stream, response)
                progress()
                following = patched.headers.get("Location")
                if following:
                    upload = upload.join(URL(following))
                commit = upload.update_query({"digest": digest})
                with registry_errors(target.registry):
                    put = await self._transport.call(target, "PUT", str(commit))
                if put.status not in (200, 201, 202, 204):
                    raise failed(target.registry, put, target.auth, f"the commit of blob {digest}")
                stored = put.headers.get("Docker-Content-Digest")
                if stored is not None and stored != digest:
                    raise StalledError(
                        f"registry {target.registry} stored blob {digest} as {stored}"
                    )
                return stream.moved
        except TimeoutError as exc:
            raise RegistryUnavailable(
                f"copying blob {digest} from registry {source.registry} to {target.registry} "
                f"made no progress for {self._transport.idle:g}s"
            ) from exc

    async def _start_upload(self, target: Side, digest: str) -> str:
        with registry_errors(target.registry):
            answer = await self._transport.call(target, "POST", f"{target.base}/blobs/uploads/")
        location = answer.headers.get("Location")
        if answer.status != 202 or not location:
            raise failed(target.registry, answer, target.auth, f"an upload of blob {digest} there")
        return location

    async def _patch(
        self,
        source: Side,
        target: Side,
        upload: URL,
        stream: _BlobStream,
        response: aiohttp.ClientResponse,
    ) -> Answer:
        """Send the source's blob as the body of one PATCH to the target's upload."""
        headers = target.headers(
            {"Content-Type": "application/octet-stream", "Content-Length": str(stream.size)}
        )
        try:
            async with self._transport.client().patch(
                upload,
                headers=headers,
                data=stream.chunks(response),
                timeout=self._transport.blob_timeout,
            ) as patched:
                answer = Answer(
                    patched.status,
                    CIMultiDict(patched.headers),
                    await patched.content.read(ERROR_BODY_LIMIT),
                    headers.get("Authorization"),
                )
        except _UPLOAD_ERRORS as exc:
            if stream.problem is not None:
                raise StalledError(
                    f"blob {stream.digest} of {source.repository} in registry "
                    f"{source.registry} {stream.problem}; not copied to {target.registry}"
                ) from exc
            unreachable = source.registry if stream.source_error is not None else target.registry
            cause = stream.source_error or exc
            detail = str(cause) or type(cause).__name__
            raise RegistryUnavailable(f"registry {unreachable} unreachable: {detail}") from exc
        rechallenged = parse_bearer_challenge(answer.headers.get("WWW-Authenticate", ""))
        if answer.status == 401 and rechallenged is not None:
            # The POST before took this token, so it expired while the blob streamed.
            raise _Rechallenged
        if not 200 <= answer.status < 300:
            raise failed(target.registry, answer, target.auth, f"an upload of blob {stream.digest}")
        return answer

    @asynccontextmanager
    async def _download(self, side: Side, digest: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """The source's answer to a GET of the blob, redirects followed, status 200."""
        with registry_errors(side.registry):
            response = await self._open(side, digest)
        try:
            if response.status != 200:
                with registry_errors(side.registry):
                    body = await response.content.read(ERROR_BODY_LIMIT)
                if response.status == 404:
                    raise StalledError(
                        f"registry {side.registry} has no blob {digest} in {side.repository}, "
                        "which the manifest being copied names"
                    )
                answer = Answer(response.status, CIMultiDict(response.headers), body, None)
                raise failed(side.registry, answer, side.auth, f"blob {digest}")
            yield response
        finally:
            response.release()

    async def _open(self, side: Side, digest: str) -> aiohttp.ClientResponse:
        url = URL(f"{side.base}/blobs/{digest}")
        origin = url.origin()
        headers = side.headers()
        challenged = False
        for _ in range(MAX_REDIRECTS + 2):
            response = await self._transport.client().get(
                url, headers=headers, allow_redirects=False, timeout=self._transport.blob_timeout
            )
            challenge = response.headers.get("WWW-Authenticate", "")
            bearer = parse_bearer_challenge(challenge) if response.status == 401 else None
            if bearer is not None and not challenged and url.origin() == origin:
                response.release()
                token = await self._transport.token(
                    side.registry, side.repository, bearer, side.basic, actions=side.actions
                )
                side.authorization = f"Bearer {token}"
                headers = side.headers()
                challenged = True
                continue
            location = response.headers.get("Location")
            if response.status not in REDIRECT_STATUSES or not location:
                return response
            response.release()
            following = url.join(URL(location))
            if following.origin() != origin:
                # Registries hand blobs to their storage (S3 for ECR) with a signed URL, and
                # storage refuses a request that brings the registry's credential as well.
                headers = {}
            url = following
        raise StalledError(
            f"registry {side.registry} redirected blob {digest} more than {MAX_REDIRECTS} times"
        )
