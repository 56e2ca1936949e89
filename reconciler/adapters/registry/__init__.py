"""Ask the registry an image is pushed to whether a tag already exists, and add tags to it.

"The tag exists" is a question for the registry the image is pushed to, through the
OCI distribution API that ECR, the CNCF registry and Docker Hub all serve, never an ECR-only
list. One HEAD of the manifest answers it without downloading anything. A new tag for an
image that is already there is one GET of its manifest and one PUT of the same bytes: no layer
moves, and the digest stays the same because the bytes do.

Promotion copies an image from one repository to another, possibly in another registry (another
AWS account's ECR), through the same API: every blob the target lacks is mounted from the source
repository when both are in one registry, and otherwise streamed from the source's GET into the
target's upload, a chunk at a time; then the manifest bytes go in unchanged, so the digest the
target answers with is the digest that was tested.

Authentication comes in the two shapes registries use: Basic on every request (ECR), or a
401 with a `Bearer` challenge naming a token service (the CNCF registry with token auth, Docker
Hub and registries modelled on it). The ECR password is secret: it is never part of a
repr, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import structlog
from multidict import CIMultiDict
from yarl import URL

from reconciler.aio.loopback import is_loopback
from reconciler.errors import RegistryUnavailable, StalledError

# Everything index, manifest or list: a multi-arch tag answers with an index, and a registry
# that is not told it may accept one answers 404 for a tag that exists.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)

# The distribution spec asks registries to take manifests up to 4 MiB; a bigger answer is not
# a manifest this can copy.
MANIFEST_LIMIT = 4 * 1024 * 1024
ERROR_BODY_LIMIT = 4096

# What aiohttp raises when the registry is down, slow or drops the connection. The test suite
# raises one of each through `registry_errors`, so a type added here is a type mapped.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError, OSError)

_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')

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

# Blobs travel in pieces of at most this size; with aiohttp's read-ahead and the piece held
# back until the digest is known, a copy holds a few MiB whatever the layer's size.
BLOB_CHUNK = 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
# An index of indexes is legal; deeper than this is a loop or an attack, not an image.
MAX_INDEX_DEPTH = 4

log = structlog.get_logger("reconciler.registry")


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry: for ECR, user `AWS` and the login token as password."""

    username: str
    password: str = field(repr=False)
    server: str


def registry_url(registry: str) -> str:
    """The base URL of the registry API: HTTPS, except for loopback registries."""
    scheme = "http" if is_loopback(registry) else "https"
    return f"{scheme}://{registry}"


def parse_bearer_challenge(header: str) -> dict[str, str] | None:
    """The parameters of a `WWW-Authenticate: Bearer ...` header, or None for other schemes."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return {m[1].lower(): m[2] or m[3] for m in _CHALLENGE_PARAM.finditer(params)}


@contextmanager
def registry_errors(registry: str) -> Iterator[None]:
    """Turn transport failures talking to `registry` into RegistryUnavailable."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        # aiohttp's messages name the host and the failure, never a credential.
        detail = str(exc) or type(exc).__name__
        raise RegistryUnavailable(f"registry {registry} unreachable: {detail}") from exc


def basic_authorization(auth: RegistryAuth) -> str:
    """The `Authorization` header value for Basic auth (what ECR expects)."""
    pair = f"{auth.username}:{auth.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _refused(registry: str, status: int) -> StalledError:
    return StalledError(f"registry {registry} refused credentials (HTTP {status})")


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    authorization: str | None  # the Authorization header the request was answered with


def _error_detail(body: bytes, auth: RegistryAuth | None) -> str:
    """The first error of a registry's JSON error body, as ` (CODE: message)`, or ""."""
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        detail = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    detail = " ".join(detail.split())[:200]
    if auth is not None and auth.password and auth.password in detail:
        # The registry writes these messages; whatever it echoes, the password stays out.
        detail = detail.replace(auth.password, "***")
    return f" ({detail})" if detail else ""


def _media_type(answer: _Answer) -> str | None:
    """The manifest's media type: the Content-Type it was served with, else its mediaType."""
    served = answer.headers.get("Content-Type", "").split(";")[0].strip()
    if served in MANIFEST_MEDIA_TYPES:
        return served
    try:
        declared = json.loads(answer.body).get("mediaType")
    except (ValueError, AttributeError):
        return None
    return declared if declared in MANIFEST_MEDIA_TYPES else None


def _shown(repository: str, reference: str) -> str:
    """`repo:tag` or `repo@digest`, as people write image references."""
    return f"{repository}@{reference}" if ":" in reference else f"{repository}:{reference}"


@dataclass
class _Side:
    """One end of a copy: a repository in a registry, and the credentials for it.

    `authorization` is what the registry last accepted (Basic, or a token its challenge led
    to), so a copy fetches a token once per side rather than once per blob. `scopes` are asked
    for with every token, so the first one already covers what later requests need.
    """

    registry: str
    repository: str
    auth: RegistryAuth | None
    actions: str
    scopes: tuple[str, ...] = ()
    basic: str | None = field(init=False, repr=False)
    authorization: str | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.basic = basic_authorization(self.auth) if self.auth else None
        self.authorization = self.basic

    @property
    def base(self) -> str:
        return f"{registry_url(self.registry)}/v2/{self.repository}"

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        return headers


@dataclass
class _Copy:
    """One copy under way: its two ends, and what it did (for its log line)."""

    source: _Side
    target: _Side
    mount: bool  # both ends in one registry: blobs are mounted, not streamed
    manifests: int = 0  # manifests put into the target
    present: int = 0  # blobs and child manifests the target already had
    mounted: int = 0
    streamed: int = 0
    bytes_streamed: int = 0
    seen: set[str] = field(default_factory=set)  # digests handled, shared layers once


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


def _digest_of(side: _Side, answer: _Answer, reference: str) -> str:
    """The digest of a manifest's bytes; a registry naming another digest is a mismatch."""
    named = answer.headers.get("Docker-Content-Digest")
    if ":" in reference:
        named = named or reference
        if named != reference:
            raise StalledError(
                f"registry {side.registry} answered {_shown(side.repository, reference)} "
                f"with {named}"
            )
    algorithm = named.partition(":")[0] if named and _DIGEST.match(named) else "sha256"
    computed = f"{algorithm}:{hashlib.new(algorithm, answer.body).hexdigest()}"
    if named is not None and named != computed:
        raise StalledError(
            f"registry {side.registry} sent {_shown(side.repository, reference)} as {named}, "
            f"but its bytes hash to {computed}"
        )
    return computed


def _descriptors(side: _Side, reference: str, items: object) -> list[tuple[str, int, str]]:
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
                f"{_shown(side.repository, reference)} with a descriptor that is not a "
                "sha256/sha512 digest and a size"
            )
        found.append((digest, size, media_type))
    return found


def _non_distributable(media_type: str) -> bool:
    # Foreign layers (Windows base layers) live at their vendor's URLs, not in the source
    # registry; the target fetches them from there the way the source's clients do.
    return "foreign" in media_type or "nondistributable" in media_type


class Registry:
    """Asks the registry the image is pushed to whether a tag exists, and adds tags there.

    One aiohttp session, created on first use (a session belongs to the running event loop)
    and shared by every app's pass.
    """

    def __init__(self, *, timeout: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # A layer may take minutes to move: blob transfers have no deadline, only a bound on
        # how long one may make no progress.
        self._idle = timeout
        self._blob_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout, sock_read=timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

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
            status, challenge = await self._head(url, headers=headers)
            bearer = parse_bearer_challenge(challenge) if status == 401 else None
            if bearer is not None:
                # The token service answers for this registry only; retry once with its token.
                token = await self._token(registry, repository, bearer, basic)
                headers["Authorization"] = f"Bearer {token}"
                status, _ = await self._head(url, headers=headers)
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
        side = _Side(registry, repository, auth, "pull")
        basic = side.basic
        got, media_type = await self._manifest(
            side, tag, missing=f"registry {registry} has no {repository}:{tag} to tag as {new_tag}"
        )
        with registry_errors(registry):
            put_headers = {"Content-Type": media_type}
            if got.authorization is not None:
                # A pull token may not allow the push; a refusal brings a challenge for one.
                put_headers["Authorization"] = got.authorization
            put = await self._exchange(
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
                raise self._failed(registry, put, auth, f"tag {repository}:{new_tag}")
        return (
            put.headers.get("Docker-Content-Digest")
            or got.headers.get("Docker-Content-Digest")
            or "sha256:" + hashlib.sha256(got.body).hexdigest()
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
        source = _Side(source_registry, source_repository, source_auth, "pull")
        pushing: tuple[str, ...] = (f"repository:{target_repository}:pull,push",)
        if mount:
            # A mount reads the source repository with the target's token.
            pushing += (f"repository:{source_repository}:pull",)
        target = _Side(target_registry, target_repository, target_auth, "pull,push", pushing)
        where = f"{target_registry}/{target_repository}:{tag}"
        got, media_type = await self._manifest(
            source,
            tag,
            missing=f"registry {source_registry} has no {source_repository}:{tag} to copy to "
            f"{where}",
        )
        digest = _digest_of(source, got, tag)
        described = {
            "source": f"{source_registry}/{source_repository}:{tag}",
            "target": where,
            "digest": digest,
        }
        present, current = await self._manifest_head(target, tag)
        if present and current == digest:
            log.info("image_already_copied", **described)
            return digest
        job = _Copy(source, target, mount)
        await self._copy_references(job, tag, got, media_type, 0)
        stored = await self._put_manifest(target, tag, got.body, media_type)
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

    async def _manifest(self, side: _Side, reference: str, *, missing: str) -> tuple[_Answer, str]:
        """The manifest `reference` names and the media type to put it back with."""
        shown = _shown(side.repository, reference)
        with registry_errors(side.registry):
            got = await self._call(
                side,
                "GET",
                f"{side.base}/manifests/{reference}",
                {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
            )
        if got.status == 404:
            raise StalledError(missing)
        if got.status != 200:
            raise self._failed(side.registry, got, side.auth, f"the manifest of {shown}")
        if len(got.body) > MANIFEST_LIMIT:
            raise StalledError(f"registry {side.registry} sent a manifest of {shown} over 4 MiB")
        media_type = _media_type(got)
        if media_type is None:
            raise StalledError(
                f"registry {side.registry} sent {shown} as "
                f"{got.headers.get('Content-Type') or 'no media type'}, which is not an "
                "image manifest or index that can be copied byte for byte"
            )
        return got, media_type

    async def _manifest_head(self, side: _Side, reference: str) -> tuple[bool, str | None]:
        """Whether `side` has the manifest `reference`, and the digest it names, if it says."""
        with registry_errors(side.registry):
            answer = await self._call(
                side,
                "HEAD",
                f"{side.base}/manifests/{reference}",
                {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
            )
        if answer.status == 404:
            return False, None
        if answer.status != 200:
            raise self._failed(
                side.registry, answer, side.auth, f"a check of {_shown(side.repository, reference)}"
            )
        return True, answer.headers.get("Docker-Content-Digest")

    async def _put_manifest(self, side: _Side, reference: str, body: bytes, media_type: str) -> str:
        """Put `body` under `reference`; the digest the registry stored it as."""
        with registry_errors(side.registry):
            put = await self._call(
                side,
                "PUT",
                f"{side.base}/manifests/{reference}",
                {"Content-Type": media_type},
                data=body,
            )
        if put.status not in (200, 201, 202):
            raise self._failed(
                side.registry, put, side.auth, f"the manifest {_shown(side.repository, reference)}"
            )
        return put.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(body).hexdigest()
        )

    async def _copy_references(
        self, job: _Copy, reference: str, got: _Answer, media_type: str, depth: int
    ) -> None:
        """Copy what the manifest in `got` refers to: child manifests, or config and layers."""
        source = job.source
        try:
            document = json.loads(got.body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise StalledError(
                f"registry {source.registry} sent {_shown(source.repository, reference)} "
                "as something other than a JSON manifest"
            )
        if media_type in INDEX_MEDIA_TYPES:
            if depth >= MAX_INDEX_DEPTH:
                raise StalledError(
                    f"registry {source.registry} sent indexes nested over {MAX_INDEX_DEPTH} "
                    f"deep under {source.repository}"
                )
            for child, _, _ in _descriptors(source, reference, document.get("manifests", [])):
                await self._copy_child(job, child, depth + 1)
            return
        blobs = [document.get("config"), *(document.get("layers") or [])]
        for digest, size, blob_type in _descriptors(source, reference, blobs):
            if not _non_distributable(blob_type):
                await self._copy_blob(job, digest, size)

    async def _copy_child(self, job: _Copy, digest: str, depth: int) -> None:
        source, target = job.source, job.target
        if digest in job.seen:
            return
        job.seen.add(digest)
        present, _ = await self._manifest_head(target, digest)
        if present:
            # A registry keeps a manifest only once everything it names is there.
            job.present += 1
            return
        got, media_type = await self._manifest(
            source,
            digest,
            missing=f"registry {source.registry} has no {source.repository}@{digest}, which "
            "an index being copied lists",
        )
        _digest_of(source, got, digest)
        await self._copy_references(job, digest, got, media_type, depth)
        stored = await self._put_manifest(target, digest, got.body, media_type)
        if stored != digest:
            raise StalledError(
                f"registry {target.registry} stored {target.repository}@{digest} as {stored}"
            )
        job.manifests += 1

    async def _copy_blob(self, job: _Copy, digest: str, size: int) -> None:
        source, target = job.source, job.target
        if digest in job.seen:
            return
        job.seen.add(digest)
        blob = f"{target.base}/blobs/{digest}"
        with registry_errors(target.registry):
            answer = await self._call(target, "HEAD", blob)
        if answer.status == 200:
            job.present += 1
            return
        if answer.status != 404:
            raise self._failed(
                target.registry, answer, target.auth, f"a check of blob {digest} there"
            )
        location: str | None = None
        if job.mount:
            uploads = URL(f"{target.base}/blobs/uploads/")
            mounting = uploads.with_query({"mount": digest, "from": source.repository})
            with registry_errors(target.registry):
                answer = await self._call(target, "POST", str(mounting))
            if answer.status == 201:
                job.mounted += 1
                return
            if answer.status != 202:
                raise self._failed(
                    target.registry, answer, target.auth, f"a mount of blob {digest}"
                )
            # The registry could not mount (the blob is not where it looked, or the token may
            # not read there) and started an ordinary upload instead: stream into that one.
            location = answer.headers.get("Location")
        for attempt in (1, 2):
            try:
                moved = await self._stream_blob(source, target, digest, size, location)
            except _Rechallenged:
                if attempt == 2:
                    raise _refused(target.registry, 401) from None
                location = None
            else:
                job.streamed += 1
                job.bytes_streamed += moved
                return

    async def _stream_blob(
        self, source: _Side, target: _Side, digest: str, size: int, location: str | None
    ) -> int:
        """Stream one blob from `source` into an upload in `target`; the bytes moved."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._idle) as stall:

                def progress() -> None:
                    stall.reschedule(loop.time() + self._idle)

                if location is None:
                    location = await self._start_upload(target, digest)
                progress()
                upload = URL(f"{registry_url(target.registry)}/v2/").join(URL(location))
                async with self._blob_download(source, digest) as response:
                    progress()
                    stream = _BlobStream(digest, size, progress)
                    patched = await self._patch(source, target, upload, stream, response)
                progress()
                following = patched.headers.get("Location")
                if following:
                    upload = upload.join(URL(following))
                commit = upload.update_query({"digest": digest})
                with registry_errors(target.registry):
                    put = await self._call(target, "PUT", str(commit))
                if put.status not in (200, 201, 202, 204):
                    raise self._failed(
                        target.registry, put, target.auth, f"the commit of blob {digest}"
                    )
                stored = put.headers.get("Docker-Content-Digest")
                if stored is not None and stored != digest:
                    raise StalledError(
                        f"registry {target.registry} stored blob {digest} as {stored}"
                    )
                return stream.moved
        except TimeoutError as exc:
            raise RegistryUnavailable(
                f"copying blob {digest} from registry {source.registry} to {target.registry} "
                f"made no progress for {self._idle:g}s"
            ) from exc

    async def _start_upload(self, target: _Side, digest: str) -> str:
        with registry_errors(target.registry):
            answer = await self._call(target, "POST", f"{target.base}/blobs/uploads/")
        location = answer.headers.get("Location")
        if answer.status != 202 or not location:
            raise self._failed(
                target.registry, answer, target.auth, f"an upload of blob {digest} there"
            )
        return location

    async def _patch(
        self,
        source: _Side,
        target: _Side,
        upload: URL,
        stream: _BlobStream,
        response: aiohttp.ClientResponse,
    ) -> _Answer:
        """Send the source's blob as the body of one PATCH to the target's upload."""
        headers = target.headers(
            {"Content-Type": "application/octet-stream", "Content-Length": str(stream.size)}
        )
        try:
            async with self._client().patch(
                upload, headers=headers, data=stream.chunks(response), timeout=self._blob_timeout
            ) as patched:
                answer = _Answer(
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
            failed = source.registry if stream.source_error is not None else target.registry
            cause = stream.source_error or exc
            detail = str(cause) or type(cause).__name__
            raise RegistryUnavailable(f"registry {failed} unreachable: {detail}") from exc
        rechallenged = parse_bearer_challenge(answer.headers.get("WWW-Authenticate", ""))
        if answer.status == 401 and rechallenged is not None:
            # The POST before took this token, so it expired while the blob streamed.
            raise _Rechallenged
        if not 200 <= answer.status < 300:
            raise self._failed(
                target.registry, answer, target.auth, f"an upload of blob {stream.digest}"
            )
        return answer

    @asynccontextmanager
    async def _blob_download(
        self, side: _Side, digest: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The source's answer to a GET of the blob, redirects followed, status 200."""
        with registry_errors(side.registry):
            response = await self._open_blob(side, digest)
        try:
            if response.status != 200:
                with registry_errors(side.registry):
                    body = await response.content.read(ERROR_BODY_LIMIT)
                if response.status == 404:
                    raise StalledError(
                        f"registry {side.registry} has no blob {digest} in {side.repository}, "
                        "which the manifest being copied names"
                    )
                answer = _Answer(response.status, CIMultiDict(response.headers), body, None)
                raise self._failed(side.registry, answer, side.auth, f"blob {digest}")
            yield response
        finally:
            response.release()

    async def _open_blob(self, side: _Side, digest: str) -> aiohttp.ClientResponse:
        url = URL(f"{side.base}/blobs/{digest}")
        origin = url.origin()
        headers = side.headers()
        challenged = False
        for _ in range(MAX_REDIRECTS + 2):
            response = await self._client().get(
                url, headers=headers, allow_redirects=False, timeout=self._blob_timeout
            )
            challenge = response.headers.get("WWW-Authenticate", "")
            bearer = parse_bearer_challenge(challenge) if response.status == 401 else None
            if bearer is not None and not challenged and url.origin() == origin:
                response.release()
                token = await self._token(
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

    async def _call(
        self,
        side: _Side,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        data: bytes | None = None,
    ) -> _Answer:
        """`_exchange` for one side of a copy, remembering the token the registry took."""
        answer = await self._exchange(
            method,
            url,
            registry=side.registry,
            repository=side.repository,
            headers=side.headers(headers),
            basic=side.basic,
            actions=side.actions,
            scopes=side.scopes,
            data=data,
        )
        if answer.status != 401:
            side.authorization = answer.authorization
        return answer

    async def _exchange(
        self,
        method: str,
        url: str,
        *,
        registry: str,
        repository: str,
        headers: Mapping[str, str],
        basic: str | None,
        actions: str,
        scopes: Sequence[str] = (),
        data: bytes | None = None,
    ) -> _Answer:
        """One request, answered once more with a token when the registry challenges it."""
        answer = await self._send(method, url, headers, data)
        bearer = (
            parse_bearer_challenge(answer.headers.get("WWW-Authenticate", ""))
            if answer.status == 401
            else None
        )
        if bearer is None:
            return answer
        token = await self._token(
            registry, repository, bearer, basic, actions=actions, scopes=scopes
        )
        return await self._send(method, url, {**headers, "Authorization": f"Bearer {token}"}, data)

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], data: bytes | None
    ) -> _Answer:
        async with self._client().request(method, url, headers=headers, data=data) as response:
            limit = MANIFEST_LIMIT + 1 if response.status == 200 else ERROR_BODY_LIMIT
            # read(n) may return less than is on its way: read until the end or the limit.
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
            return _Answer(
                response.status,
                CIMultiDict(response.headers),
                b"".join(chunks),
                headers.get("Authorization"),
            )

    @staticmethod
    def _failed(registry: str, answer: _Answer, auth: RegistryAuth | None, what: str) -> Exception:
        status = answer.status
        if status in (401, 403):
            return _refused(registry, status)
        detail = _error_detail(answer.body, auth)
        if status == 429 or status >= 500:
            return RegistryUnavailable(f"registry {registry} answered HTTP {status}{detail}")
        return StalledError(f"registry {registry} answered HTTP {status} for {what}{detail}")

    async def _head(self, url: str, *, headers: Mapping[str, str]) -> tuple[int, str]:
        async with self._client().head(url, headers=headers) as response:
            return response.status, response.headers.get("WWW-Authenticate", "")

    async def _token(
        self,
        registry: str,
        repository: str,
        challenge: Mapping[str, str],
        basic: str | None,
        *,
        actions: str = "pull",
        scopes: Sequence[str] = (),
    ) -> str:
        """Fetch a token from the realm the registry named in its challenge.

        `scopes` are asked for besides the challenge's, so that one token serves the requests
        that follow (the pushes of a copy after its first check).
        """
        realm = challenge.get("realm", "")
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryUnavailable(f"registry {registry} sent an unusable token realm")
        if basic is not None and parts.scheme == "http" and not is_loopback(parts.netloc):
            # The realm is chosen by whoever answers; the password only travels encrypted.
            raise StalledError(
                f"registry {registry} asks for credentials at a plain-HTTP token service "
                f"({parts.hostname}); refusing to send them"
            )
        named = challenge.get("scope") or f"repository:{repository}:{actions}"
        params = [("scope", scope) for scope in dict.fromkeys((named, *scopes))]
        if challenge.get("service"):
            params.append(("service", challenge["service"]))
        headers = {"Authorization": basic} if basic else {}
        async with self._client().get(realm, params=params, headers=headers) as response:
            if response.status in (401, 403):
                raise _refused(registry, response.status)
            if response.status != 200:
                raise RegistryUnavailable(
                    f"token service of registry {registry} answered HTTP {response.status}"
                )
            try:
                body = await response.json(content_type=None)
            except ValueError as exc:
                raise RegistryUnavailable(
                    f"token service of registry {registry} sent no JSON"
                ) from exc
        # Docker's token spec says `token`; OAuth2-style services send `access_token`.
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryUnavailable(f"token service of registry {registry} sent no token")
        return token

    @staticmethod
    def _answer(registry: str, status: int) -> bool:
        if status == 200:
            return True
        if status == 404:
            return False
        if status in (401, 403):
            raise _refused(registry, status)
        if status == 429 or status >= 500:
            raise RegistryUnavailable(f"registry {registry} answered HTTP {status}")
        # Any other answer (400 for a malformed name, say) will not change by retrying.
        raise StalledError(f"registry {registry} answered HTTP {status} to a manifest check")

    async def close(self) -> None:
        """Close the HTTP session; the next call opens a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None
