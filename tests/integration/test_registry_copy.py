"""Registry copy: promotion moves a proven image to another repository or registry by its bytes.

Images are built by the docker CLI (FROM scratch, no network) and pushed to the local registry
at 127.0.0.1:5000; a second registry of the module's own, on another loopback port, stands in
for another account's ECR. A recording proxy in the test process sits in front of either when
a test needs to see (or bend) the requests: how many blobs were fetched, whether a mount was
answered 201, which token scopes each side asked for.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from yarl import URL

from reconciler.adapters.registry import MANIFEST_MEDIA_TYPES, Registry, RegistryAuth
from reconciler.errors import RegistryUnavailable, StalledError
from tests.support.memory import PeakRss, rss_kib
from tests.support.net import free_port
from tests.support.registry_process import RegistryProcess

ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SOURCE_PASSWORD = "source-password-" + uuid.uuid4().hex
TARGET_PASSWORD = "target-password-" + uuid.uuid4().hex
MIB = 1024 * 1024

# Hop-by-hop headers and the ones aiohttp sets itself; everything else passes the proxy.
HOP_HEADERS = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "authorization", "upgrade"}
)


# --- images ------------------------------------------------------------------------------


@dataclass
class Images:
    """Builds tiny images with the docker CLI and pushes them; removes the local copies after."""

    registry: str
    root: Path
    built: list[str] = field(default_factory=list)

    def push(self, repository: str, tag: str, *, big: int = 0, registry: str | None = None) -> str:
        """Build `FROM scratch` + a unique small file (+ `big` random bytes, a layer of their
        own) and push it as `repository:tag`; the image reference."""
        context = self.root / f"context-{uuid.uuid4().hex[:8]}"
        context.mkdir(parents=True)
        (context / "hello.txt").write_text(f"{repository}:{tag} {uuid.uuid4()}\n")
        dockerfile = ["FROM scratch", "COPY hello.txt /hello.txt"]
        if big:
            with (context / "big.bin").open("wb") as out:
                for _ in range(0, big, MIB):
                    out.write(os.urandom(MIB))
            dockerfile.append("COPY big.bin /big.bin")
        (context / "Dockerfile").write_text("\n".join(dockerfile) + "\n")
        image = f"{registry or self.registry}/{repository}:{tag}"
        self.built.append(image)
        docker("build", "--network", "none", "-q", "-t", image, str(context))
        docker("push", image)
        return image

    def cleanup(self) -> None:
        for image in self.built:
            subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, check=False)


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture
def images(registry: str, docker_engine: str, tmp_path: Path) -> Iterator[Images]:
    made = Images(registry, tmp_path / "images")
    yield made
    made.cleanup()


@pytest.fixture(scope="module")
def second_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another registry on another loopback port: the other account's ECR of these tests."""
    with RegistryProcess(tmp_path_factory.mktemp("second-registry")) as process:
        yield process.address


@pytest.fixture
async def registry_client() -> AsyncIterator[Registry]:
    client = Registry(timeout=10.0)
    yield client
    await client.close()


def unique(name: str) -> str:
    return f"reconciler-test/copy-{name}-{uuid.uuid4().hex[:10]}"


async def copy(
    client: Registry,
    source: str,
    source_repository: str,
    target: str,
    target_repository: str,
    *,
    tag: str = "v1",
    source_auth: RegistryAuth | None = None,
    target_auth: RegistryAuth | None = None,
) -> str:
    return await client.copy(
        source_registry=source,
        source_repository=source_repository,
        tag=tag,
        target_registry=target,
        target_repository=target_repository,
        source_auth=source_auth,
        target_auth=target_auth,
    )


async def manifest(registry: str, repository: str, reference: str) -> tuple[str, str, bytes]:
    """Digest, media type and bytes `repository:reference` serves now."""
    url = f"http://{registry}/v2/{repository}/manifests/{reference}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Accept": ACCEPT}) as response,
    ):
        assert response.status == 200, (url, response.status)
        body = await response.read()
        return response.headers["Docker-Content-Digest"], response.headers["Content-Type"], body


async def status_of(method: str, url: str) -> int:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        return response.status


def blobs_of(body: bytes) -> list[str]:
    document = json.loads(body)
    return [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]


# --- a recording proxy -------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    status: int


Hook = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


class Proxy:
    """A registry's front door in the test process: records every request and its answer,
    streams bodies both ways, and can ask for credentials the registry behind it does not.

    `auth` is None (anything goes), "basic" (ECR's shape) or "bearer" (a token service at
    /token, granting the scopes asked for; each request needs the scope of its method).
    `hook` may answer a request itself (return a response) before it is forwarded.
    """

    def __init__(
        self,
        upstream: str,
        *,
        auth: str | None = None,
        password: str = "",
        hook: Hook | None = None,
        strip_mounts: bool = False,
        corrupt_blobs: bool = False,
        expire_tokens_at_first_patch: bool = False,
    ) -> None:
        self.upstream = upstream
        self.auth = auth
        self.password = password
        self.hook = hook
        self.strip_mounts = strip_mounts
        self.corrupt_blobs = corrupt_blobs
        self.expire_tokens_at_first_patch = expire_tokens_at_first_patch
        self.seen: list[Seen] = []
        self.token_requests: list[list[str]] = []
        self.authorizations: list[str] = []
        self.tokens: dict[str, set[str]] = {}
        self.address = ""
        self._session: aiohttp.ClientSession | None = None

    def calls(self, method: str, fragment: str = "") -> list[Seen]:
        return [s for s in self.seen if s.method == method and fragment in s.path]

    def blob_gets(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and "/blobs/sha" in s.path]

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"AWS:{self.password}".encode()).decode()

    def _needed(self, request: web.Request) -> set[str]:
        parts = request.path.split("/")
        kind = next(i for i, part in enumerate(parts) if part in ("manifests", "blobs"))
        repository = "/".join(parts[2:kind])
        pushing = request.method in ("POST", "PUT", "PATCH", "DELETE")
        needed = {f"repository:{repository}:{'pull,push' if pushing else 'pull'}"}
        if "from" in request.query:
            needed.add(f"repository:{request.query['from']}:pull")
        return needed

    def _covered(self, needed: set[str], granted: set[str]) -> bool:
        def actions(scope: str) -> tuple[str, set[str]]:
            resource, _, allowed = scope.rpartition(":")
            return resource, set(allowed.split(","))

        grants: dict[str, set[str]] = {}
        for scope in granted:
            resource, allowed = actions(scope)
            grants.setdefault(resource, set()).update(allowed)
        return all(actions(s)[1] <= grants.get(actions(s)[0], set()) for s in needed)

    async def _refuse(self, request: web.Request) -> web.StreamResponse | None:
        given = request.headers.get("Authorization", "")
        self.authorizations.append(given)
        if self.auth == "basic" and given != self._basic():
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="ecr"'})
        if self.auth == "bearer" and request.path.startswith("/v2/") and request.path != "/v2/":
            if self.expire_tokens_at_first_patch and request.method == "PATCH":
                self.expire_tokens_at_first_patch = False
                self.tokens.clear()  # as if the token's lifetime ran out mid-upload
            needed = self._needed(request)
            granted = self.tokens.get(given.removeprefix("Bearer "), set())
            if not given.startswith("Bearer ") or not self._covered(needed, granted):
                challenge = (
                    f'Bearer realm="http://{request.host}/token",service="proxy",'
                    f'scope="{" ".join(sorted(needed))}"'
                )
                return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return None

    async def _token(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != self._basic():
            return web.Response(status=401)
        scopes = request.query.getall("scope", [])
        self.token_requests.append(scopes)
        token = uuid.uuid4().hex
        self.tokens[token] = {part for scope in scopes for part in scope.split(" ")}
        return web.json_response({"token": token})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.auth == "bearer" and request.path == "/token":
            return await self._token(request)
        answered = await self._refuse(request)
        if answered is None and self.hook is not None:
            answered = await self.hook(request)
        if answered is not None:
            self.seen.append(
                Seen(request.method, request.path, dict(request.query), answered.status)
            )
            return answered
        raw = request.raw_path
        if self.strip_mounts and "mount" in request.query:
            # As a registry does when it will not mount: an ordinary upload starts instead.
            raw = raw.partition("?")[0]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        # The registry writes upload Locations with the Host it was asked at: this proxy.
        headers["Host"] = request.host
        assert self._session is not None
        async with self._session.request(
            request.method,
            URL(f"http://{self.upstream}{raw}", encoded=True),
            headers=headers,
            data=request.content if request.body_exists else None,
            allow_redirects=False,
        ) as upstream:
            query = dict(URL(raw, encoded=True).query)
            self.seen.append(Seen(request.method, request.path, query, upstream.status))
            answer = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_HEADERS:
                    answer.headers.add(name, value)
            await answer.prepare(request)
            first = True
            async for chunk in upstream.content.iter_chunked(256 * 1024):
                sent = chunk
                if first and self.corrupt_blobs and "/blobs/sha" in request.path and chunk:
                    sent = bytes([chunk[0] ^ 1]) + chunk[1:]  # same length, other bytes
                first = False
                await answer.write(sent)
            await answer.write_eof()
            return answer

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{path:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.address = f"{host}:{port}"
        return self.address

    async def stop(self) -> None:
        await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@pytest.fixture
async def proxy() -> AsyncIterator[Callable[..., Awaitable[Proxy]]]:
    started: list[Proxy] = []

    async def start(upstream: str, **options: object) -> Proxy:
        made = Proxy(upstream, **options)  # type: ignore[arg-type]
        await made.start()
        started.append(made)
        return made

    yield start
    for made in started:
        await made.stop()


ProxyFactory = Callable[..., Awaitable[Proxy]]


def logged_copies(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] in ("image_copied", "image_already_copied")]


# --- same registry: mounts -----------------------------------------------------------------


async def test_same_registry_copy_mounts_every_blob_and_streams_none(
    registry: str, images: Images, proxy: ProxyFactory, registry_client: Registry
) -> None:
    source, target = unique("src"), unique("dst")
    images.push(source, "v1")
    pushed, media_type, body = await manifest(registry, source, "v1")
    front = await proxy(registry)

    with structlog.testing.capture_logs() as logs:
        digest = await copy(registry_client, front.address, source, front.address, target)

    assert digest == pushed
    assert await manifest(registry, target, "v1") == (pushed, media_type, body)
    blobs = blobs_of(body)
    assert len(blobs) == 2  # the config and the one layer
    mounts = front.calls("POST", f"/v2/{target}/blobs/uploads/")
    assert [(m.query.get("mount"), m.query.get("from"), m.status) for m in mounts] == [
        (blob, source, 201) for blob in blobs
    ]
    assert front.blob_gets() == []
    assert front.calls("PATCH") == []
    (entry,) = logged_copies(logs)
    assert (entry["mounted"], entry["streamed"], entry["bytes_streamed"]) == (2, 0, 0)


async def test_a_registry_that_will_not_mount_gets_the_blobs_streamed(
    registry: str, images: Images, proxy: ProxyFactory, registry_client: Registry
) -> None:
    """202 to a mount is an upload the registry started instead: the blob goes into it."""
    source, target = unique("src"), unique("dst")
    images.push(source, "v1")
    pushed, _, body = await manifest(registry, source, "v1")
    front = await proxy(registry, strip_mounts=True)

    digest = await copy(registry_client, front.address, source, front.address, target)

    assert digest == pushed
    assert (await manifest(registry, target, "v1"))[0] == pushed
    blobs = blobs_of(body)
    assert [m.status for m in front.calls("POST", "/blobs/uploads/")] == [202, 202]
    # Each blob streams into the upload the mount started, not into a second one.
    assert len(front.calls("POST")) == len(blobs)
    assert sorted(get.path.rpartition("/")[2] for get in front.blob_gets()) == sorted(blobs)
    assert len(front.calls("PATCH")) == len(blobs)


# --- another registry: streams -------------------------------------------------------------


async def test_cross_registry_copy_streams_each_blob_once_and_docker_pulls_it(
    registry: str,
    second_registry: str,
    images: Images,
    proxy: ProxyFactory,
    registry_client: Registry,
) -> None:
    source, target = unique("src"), unique("dst")
    images.push(source, "v1")
    pushed, media_type, body = await manifest(registry, source, "v1")
    front = await proxy(registry)

    with structlog.testing.capture_logs() as logs:
        digest = await copy(registry_client, front.address, source, second_registry, target)

    assert digest == pushed
    assert await manifest(second_registry, target, "v1") == (pushed, media_type, body)
    blobs = blobs_of(body)
    assert sorted(get.path.rpartition("/")[2] for get in front.blob_gets()) == sorted(blobs)
    assert front.calls("POST") == []  # nothing is written to the source
    for blob in blobs:
        assert await status_of("HEAD", f"http://{second_registry}/v2/{target}/blobs/{blob}") == 200
    (entry,) = logged_copies(logs)
    assert (entry["mounted"], entry["streamed"]) == (0, 2)

    pulled = f"{second_registry}/{target}:v1"
    images.built.append(pulled)
    docker("pull", "-q", pulled)
    repo_digests = docker("image", "inspect", "--format", "{{json .RepoDigests}}", pulled)
    assert f"{second_registry}/{target}@{pushed}" in json.loads(repo_digests)


async def test_an_index_copies_with_every_manifest_it_lists(
    registry: str,
    second_registry: str,
    images: Images,
    proxy: ProxyFactory,
    registry_client: Registry,
) -> None:
    source, target = unique("src"), unique("dst")
    children = []
    for architecture in ("amd64", "arm64"):
        images.push(source, architecture)
        digest, media_type, body = await manifest(registry, source, architecture)
        children.append(
            {
                "mediaType": media_type,
                "digest": digest,
                "size": len(body),
                "platform": {"architecture": architecture, "os": "linux"},
            }
        )
    # Unusual whitespace: a copy that re-serialised the index would change its digest.
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}, indent=3
    ).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            f"http://{registry}/v2/{source}/manifests/multi",
            data=index,
            headers={"Content-Type": OCI_INDEX},
        ) as response,
    ):
        assert response.status == 201, await response.text()
    front = await proxy(second_registry)

    digest = await copy(registry_client, registry, source, front.address, target, tag="multi")

    assert digest == "sha256:" + hashlib.sha256(index).hexdigest()
    assert await manifest(second_registry, target, "multi") == (digest, OCI_INDEX, index)
    for child in children:
        child_digest = str(child["digest"])
        _, _, child_body = await manifest(second_registry, target, child_digest)
        for blob in blobs_of(child_body):
            url = f"http://{second_registry}/v2/{target}/blobs/{blob}"
            assert await status_of("HEAD", url) == 200
    # The children went in by digest before the index went in under the tag.
    puts = [s.path.rpartition("/")[2] for s in front.calls("PUT", "/manifests/")]
    assert puts == [str(c["digest"]) for c in children] + ["multi"]


async def test_copying_again_does_nothing_but_the_head(
    registry: str,
    second_registry: str,
    images: Images,
    proxy: ProxyFactory,
    registry_client: Registry,
) -> None:
    source, target = unique("src"), unique("dst")
    images.push(source, "v1")
    first = await copy(registry_client, registry, source, second_registry, target)
    source_front = await proxy(registry)
    target_front = await proxy(second_registry)

    with structlog.testing.capture_logs() as logs:
        again = await copy(
            registry_client, source_front.address, source, target_front.address, target
        )

    assert again == first
    assert [(s.method, s.path, s.status) for s in target_front.seen] == [
        ("HEAD", f"/v2/{target}/manifests/v1", 200)
    ]
    assert [(s.method, s.path) for s in source_front.seen] == [
        ("GET", f"/v2/{source}/manifests/v1")
    ]
    assert [entry["event"] for entry in logged_copies(logs)] == ["image_already_copied"]


async def test_blobs_the_target_has_are_skipped_and_a_moved_tag_is_copied_again(
    registry: str,
    second_registry: str,
    images: Images,
    proxy: ProxyFactory,
    registry_client: Registry,
) -> None:
    source, target = unique("src"), unique("dst")
    images.push(source, "a")
    first = await copy(registry_client, registry, source, second_registry, target, tag="a")
    await registry_client.retag(
        registry=registry, repository=source, tag="a", new_tag="production", auth=None
    )
    front = await proxy(second_registry)

    # The same image under a new tag: its blobs are there already, only the manifest goes.
    same = await copy(registry_client, registry, source, front.address, target, tag="production")
    assert same == first
    assert [h.status for h in front.calls("HEAD", "/blobs/")] == [200, 200]
    assert [(s.method, s.status) for s in front.seen if s.method != "HEAD"] == [("PUT", 201)]

    # A new image pushed under the tag: the target's tag follows it, with all-new blobs.
    images.push(source, "production")
    front.seen.clear()
    moved = await copy(registry_client, registry, source, front.address, target, tag="production")
    assert moved != first
    assert (await manifest(second_registry, target, "production"))[0] == moved
    assert (await manifest(second_registry, target, "a"))[0] == first
    assert [h.status for h in front.calls("HEAD", "/blobs/")] == [404, 404]
    assert len(front.calls("PATCH")) == 2


# --- failures ------------------------------------------------------------------------------


async def test_missing_source_tag_is_a_stalled_error_naming_it(
    registry: str, second_registry: str, images: Images, registry_client: Registry
) -> None:
    source = unique("src")
    images.push(source, "v1")
    with pytest.raises(StalledError, match=rf"{source}:nope\b") as caught:
        await copy(registry_client, registry, source, second_registry, unique("dst"), tag="nope")
    assert registry in str(caught.value)
    assert not isinstance(caught.value, RegistryUnavailable)


@pytest.mark.parametrize("closed_side", ["source", "target"])
async def test_a_closed_port_is_registry_unavailable_naming_it(
    registry: str, images: Images, registry_client: Registry, closed_side: str
) -> None:
    source = unique("src")
    images.push(source, "v1")
    closed = f"127.0.0.1:{free_port()}"
    auth = RegistryAuth(username="AWS", password=TARGET_PASSWORD, server=closed)
    with pytest.raises(RegistryUnavailable, match=closed) as caught:
        await copy(
            registry_client,
            closed if closed_side == "source" else registry,
            source,
            closed if closed_side == "target" else registry,
            unique("dst"),
            source_auth=auth if closed_side == "source" else None,
            target_auth=auth if closed_side == "target" else None,
        )
    assert TARGET_PASSWORD not in str(caught.value)


async def test_a_source_that_drops_a_blob_mid_stream_is_unavailable_not_the_target(
    second_registry: str, images: Images, proxy: ProxyFactory, registry_client: Registry
) -> None:
    source, target = unique("src"), unique("dst")
    images.push(source, "v1")

    async def cut_off(request: web.Request) -> web.StreamResponse | None:
        if request.method != "GET" or "/blobs/sha" not in request.path:
            return None
        answer = web.StreamResponse(headers={"Content-Length": "100000"})
        await answer.prepare(request)
        await answer.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()
        return answer

    front = await proxy(images.registry, hook=cut_off)
    with pytest.raises(RegistryUnavailable, match=rf"registry {front.address} unreachable"):
        await copy(registry_client, front.address, source, second_registry, target)
    url = f"http://{second_registry}/v2/{target}/manifests/v1"
    assert await status_of("HEAD", url) == 404


@pytest.mark.parametrize("path", ["/blobs/uploads/", "/manifests/v1"])
async def test_server_errors_on_the_target_are_transient(
    second_registry: str,
    images: Images,
    proxy: ProxyFactory,
    registry_client: Registry,
    path: str,
) -> None:
    registry = images.registry
    source, target = unique("src"), unique("dst")
    images.push(source, "v1")

    async def unavailable(request: web.Request) -> web.StreamResponse | None:
        if request.method in ("POST", "PUT") and request.path.endswith(path):
            return web.Response(status=503)
        return None

    front = await proxy(second_registry, hook=unavailable)
    with pytest.raises(RegistryUnavailable, match=rf"{front.address} answered HTTP 503"):
        await copy(registry_client, registry, source, front.address, target)


async def test_a_blob_that_does_not_match_its_digest_stalls_and_is_never_committed(
    registry: str,
    second_registry: str,
    images: Images,
    proxy: ProxyFactory,
    registry_client: Registry,
) -> None:
    source, target = unique("src"), unique("dst")
    images.push(source, "v1")
    _, _, body = await manifest(registry, source, "v1")
    front = await proxy(registry, corrupt_blobs=True)
    with pytest.raises(StalledError, match="hashes to sha256:") as caught:
        await copy(registry_client, front.address, source, second_registry, target)
    assert not isinstance(caught.value, RegistryUnavailable)
    for blob in blobs_of(body):
        assert await status_of("HEAD", f"http://{second_registry}/v2/{target}/blobs/{blob}") == 404
    url = f"http://{second_registry}/v2/{target}/manifests/v1"
    assert await status_of("HEAD", url) == 404


# --- credentials -----------------------------------------------------------------------------


def auth_for(address: str, password: str) -> RegistryAuth:
    return RegistryAuth(username="AWS", password=password, server=address)


async def test_bearer_tokens_pull_from_the_source_and_push_to_the_target(
    registry: str,
    second_registry: str,
    images: Images,
    proxy: ProxyFactory,
    registry_client: Registry,
) -> None:
    source, target = unique("src"), unique("dst")
    images.push(source, "v1")
    pushed, _, _ = await manifest(registry, source, "v1")
    source_front = await proxy(registry, auth="bearer", password=SOURCE_PASSWORD)
    target_front = await proxy(second_registry, auth="bearer", password=TARGET_PASSWORD)

    with structlog.testing.capture_logs() as logs:
        digest = await copy(
            registry_client,
            source_front.address,
            source,
            target_front.address,
            target,
            source_auth=auth_for(source_front.address, SOURCE_PASSWORD),
            target_auth=auth_for(target_front.address, TARGET_PASSWORD),
        )

    assert digest == pushed
    assert (await manifest(second_registry, target, "v1"))[0] == pushed
    # One token per side serves the whole copy, and the source's may only read.
    assert source_front.token_requests == [[f"repository:{source}:pull"]]
    assert target_front.token_requests == [
        [f"repository:{target}:pull", f"repository:{target}:pull,push"]
    ]
    assert SOURCE_PASSWORD not in json.dumps(logs, default=str)
    assert TARGET_PASSWORD not in json.dumps(logs, default=str)


async def test_a_same_registry_token_covers_the_mount(
    registry: str, images: Images, proxy: ProxyFactory, registry_client: Registry
) -> None:
    source, target = unique("src"), unique("dst")
    images.push(source, "v1")
    front = await proxy(registry, auth="bearer", password=TARGET_PASSWORD)
    auth = auth_for(front.address, TARGET_PASSWORD)
    await copy(
        registry_client,
        front.address,
        source,
        front.address,
        target,
        source_auth=auth,
        target_auth=auth,
    )
    assert [m.status for m in front.calls("POST", "/blobs/uploads/")] == [201, 201]
    assert front.blob_gets() == []
    assert front.token_requests[1] == [
        f"repository:{target}:pull",
        f"repository:{target}:pull,push",
        f"repository:{source}:pull",
    ]


async def test_a_token_that_expires_while_a_blob_streams_is_renewed_and_the_blob_resent(
    second_registry: str, images: Images, proxy: ProxyFactory, registry_client: Registry
) -> None:
    """A streamed body cannot be replayed: the blob starts over, with a new token."""
    source, target = unique("src"), unique("dst")
    images.push(source, "v1")
    pushed, _, body = await manifest(images.registry, source, "v1")
    source_front = await proxy(images.registry)
    target_front = await proxy(
        second_registry,
        auth="bearer",
        password=TARGET_PASSWORD,
        expire_tokens_at_first_patch=True,
    )
    digest = await copy(
        registry_client,
        source_front.address,
        source,
        target_front.address,
        target,
        target_auth=auth_for(target_front.address, TARGET_PASSWORD),
    )
    assert digest == pushed
    assert (await manifest(second_registry, target, "v1"))[0] == pushed
    assert [s.status for s in target_front.calls("PATCH")] == [401, 202, 202]
    assert len(target_front.token_requests) == 2
    config = blobs_of(body)[0]
    assert [g.path.rpartition("/")[2] for g in source_front.blob_gets()].count(config) == 2


@pytest.mark.parametrize("side", ["source", "target"])
async def test_refused_credentials_stall_naming_the_registry_that_refused(
    second_registry: str,
    images: Images,
    proxy: ProxyFactory,
    registry_client: Registry,
    side: str,
) -> None:
    registry = images.registry
    source = unique("src")
    images.push(source, "v1")
    source_front = await proxy(registry, auth="basic", password=SOURCE_PASSWORD)
    target_front = await proxy(second_registry, auth="basic", password=TARGET_PASSWORD)
    wrong = "stale-" + uuid.uuid4().hex
    refusing = source_front if side == "source" else target_front
    other = target_front if side == "source" else source_front
    source_password = wrong if side == "source" else SOURCE_PASSWORD
    target_password = wrong if side == "target" else TARGET_PASSWORD
    with pytest.raises(StalledError, match="refused credentials") as caught:
        await copy(
            registry_client,
            source_front.address,
            source,
            target_front.address,
            unique("dst"),
            source_auth=auth_for(source_front.address, source_password),
            target_auth=auth_for(target_front.address, target_password),
        )
    message = str(caught.value)
    assert refusing.address in message
    assert other.address not in message
    for secret in (wrong, SOURCE_PASSWORD, TARGET_PASSWORD):
        assert secret not in message


async def test_a_blob_redirected_to_storage_is_fetched_without_the_registry_credential(
    registry: str,
    second_registry: str,
    images: Images,
    proxy: ProxyFactory,
    registry_client: Registry,
) -> None:
    """ECR answers a blob GET with a redirect to S3, which refuses a second credential."""
    source, target = unique("src"), unique("dst")
    images.push(source, "v1")
    pushed, _, _ = await manifest(registry, source, "v1")
    storage_seen: list[str | None] = []

    async def storage(request: web.Request) -> web.StreamResponse:
        storage_seen.append(request.headers.get("Authorization"))
        if "Authorization" in request.headers or request.query.get("signature") != "ok":
            return web.Response(status=400, text="only one auth mechanism allowed")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{registry}{request.path}") as upstream,
        ):
            return web.Response(body=await upstream.read())

    app = web.Application()
    app.router.add_get("/{path:.*}", storage)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    storage_host, storage_port = runner.addresses[0][:2]

    async def redirect(request: web.Request) -> web.StreamResponse | None:
        if request.method == "GET" and "/blobs/sha" in request.path:
            location = f"http://{storage_host}:{storage_port}{request.path}?signature=ok"
            return web.Response(status=307, headers={"Location": location})
        return None

    front = await proxy(registry, auth="basic", password=SOURCE_PASSWORD, hook=redirect)
    try:
        digest = await copy(
            registry_client,
            front.address,
            source,
            second_registry,
            target,
            source_auth=auth_for(front.address, SOURCE_PASSWORD),
        )
    finally:
        await runner.cleanup()
    assert digest == pushed
    assert storage_seen == [None, None]
    assert [s.status for s in front.blob_gets()] == [307, 307]


# --- a large layer streams -----------------------------------------------------------------


@pytest.mark.slow
async def test_a_30_mib_layer_streams_across_registries_without_the_process_holding_it(
    registry: str,
    second_registry: str,
    images: Images,
    registry_client: Registry,
) -> None:
    source, target = unique("big"), unique("big")
    images.push(source, "v1", big=30 * MIB)
    pushed, _, body = await manifest(registry, source, "v1")
    layers = json.loads(body)["layers"]
    assert max(layer["size"] for layer in layers) > 30 * MIB  # random bytes do not compress
    # A small copy first, so that the session, its connections and the code paths are warm.
    warm = unique("warm")
    images.push(warm, "v1")
    await copy(registry_client, registry, warm, second_registry, warm)
    await asyncio.sleep(0)

    before = rss_kib()
    with structlog.testing.capture_logs() as logs, PeakRss() as peak:
        digest = await copy(registry_client, registry, source, second_registry, target)

    assert digest == pushed
    assert (await manifest(second_registry, target, "v1"))[0] == pushed
    (entry,) = logged_copies(logs)
    assert isinstance(entry["bytes_streamed"], int)
    assert entry["bytes_streamed"] > 30 * MIB
    growth_mib = (peak.peak - before) / 1024
    print(f"streamed {entry['bytes_streamed']} bytes; peak RSS growth {growth_mib:.1f} MiB")
    assert growth_mib < 10, f"RSS grew {growth_mib:.1f} MiB while a 30 MiB layer streamed"
