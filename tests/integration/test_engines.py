"""Builds spread over several Docker engines (`[build].engines`).

The choice of engine is a pure function, tested as a table. The pool around it is tested
against real engines: the shared one and dockerds of the tests' own (tests/support/engines.py),
which a test may start late, kill in the middle of a build, or reach over TCP with TLS client
certificates. A few properties that real engines cannot show on demand (a build waiting for a
place, the context read again from its start) are shown with engines in memory.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from structlog.testing import capture_logs

from reconciler.adapters import buildkit
from reconciler.adapters.docker import BuildResult, DockerEngine
from reconciler.adapters.engines import (
    REMEMBERED_IMAGES,
    Engine,
    EnginePool,
    Load,
    NoEngine,
    Take,
    Wait,
    choose,
)
from reconciler.adapters.registry import Registry, RegistryAuth
from reconciler.adapters.values import BuildRequest
from reconciler.config import parse_config
from reconciler.decisions.local_images import LocalImage
from reconciler.errors import ConfigError, DockerUnavailable
from tests.support.engines import Certificates, Dockerd, docker, has_image, make_certificates
from tests.support.fakes import FakeDocker
from tests.support.probes import eventually

# Bounds each test, a dockerd's start included; they take seconds.
pytestmark = pytest.mark.timeout(60)

# Any cache image of these tests is in the local registry, which asks for no credentials.
CACHE_AUTH = RegistryAuth(username="AWS", password="unused-here", server="127.0.0.1")


# The choice ------------------------------------------------------------------------------


UP = Load(running=0)


@pytest.mark.parametrize(
    ("loads", "skip", "expected"),
    [
        ([UP, UP], (), Take(index=0, probe=False)),  # a tie: the engine listed first
        ([Load(running=1), UP], (), Take(index=1, probe=False)),  # the least busy
        ([Load(running=1), Load(running=2)], (), Take(index=0, probe=False)),
        ([Load(running=2), Load(running=2)], (), Wait(seconds=None)),  # all full
        ([Load(0, down_until=10.0), UP], (), Take(index=1, probe=False)),  # down: skipped
        ([Load(0, down_until=5.0), UP], (), Take(index=0, probe=True)),  # due: ping it first
        ([Load(0, down_until=8.0), Load(running=2)], (), Wait(seconds=1.0)),  # until it is due
        ([Load(2, down_until=8.0), Load(running=2)], (), Wait(seconds=None)),
        ([Load(0, down_until=10.0), Load(0, down_until=9.0)], (), NoEngine()),
        ([UP, UP], (0,), Take(index=1, probe=False)),  # tried already for this build
        ([UP, Load(0, down_until=9.0)], (0,), NoEngine()),
        ([UP], (0,), NoEngine()),
    ],
)
def test_the_choice_of_engine(
    loads: list[Load], skip: tuple[int, ...], expected: Take | Wait | NoEngine
) -> None:
    """Fewest running first, ties to the first listed, down engines only once they are due."""
    assert choose(loads, now=7.0, max_per_engine=2, skip=skip) == expected


# The config ------------------------------------------------------------------------------


def build_problems(section: str) -> list[str]:
    try:
        parse_config(f"[build]\n{section}\n")
    except ConfigError as exc:
        return exc.problems
    return []


TLS_FILES = 'tls_ca_file = "/ca.pem"\ntls_cert_file = "/cert.pem"\ntls_key_file = "/key.pem"'


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ('engines = ["http://builder:2375"]', "must be unix:///path/to/docker.sock or tcp://"),
        ('engines = ["ssh://builder"]', "must be unix:///path/to/docker.sock or tcp://"),
        ('engines = ["tcp://builder"]', "or tcp://host:port"),
        ('engines = ["tcp://builder:99999"]', "or tcp://host:port"),
        ('engines = ["unix:///a.sock", "unix:///a.sock"]', "listed twice"),
        ('engines = ["tcp://builder:2376"]', "needs tls_ca_file, tls_cert_file and tls_key_file"),
        (
            'engines = ["tcp://builder:2376"]\ntls_ca_file = "/ca.pem"',
            "tls_cert_file, tls_key_file missing",
        ),
        (f'engines = ["unix:///a.sock"]\n{TLS_FILES}', "engines lists none"),
        ("max_per_engine = 0", "greater than or equal to 1"),
    ],
)
def test_engine_settings_that_cannot_work_are_refused_in_one_line(section: str, words: str) -> None:
    problems = build_problems(section)
    assert len(problems) == 1
    assert problems[0].startswith("build")
    assert words in problems[0]


def test_engine_settings_that_work() -> None:
    engines = '"unix:///var/run/docker.sock", "tcp://builder-1:2376", "tcp://[::1]:2376"'
    config = parse_config(f"[build]\nengines = [{engines}]\n{TLS_FILES}\nmax_per_engine = 3\n")
    assert config.build.engines[1] == "tcp://builder-1:2376"
    assert config.build.tls_files() == (Path("/ca.pem"), Path("/cert.pem"), Path("/key.pem"))
    assert parse_config("[build]\n").build.engines == ()  # the one engine at docker_host


def test_the_cli_checks_a_tcp_engine_as_docker_tlsverify_does() -> None:
    cli = buildkit.DockerCli(path="/usr/bin/docker", version="20.10.24")
    tls = buildkit.EngineTls(ca_file="/t/ca.pem", cert_file="/t/cert.pem", key_file="/t/key.pem")
    request = BuildRequest(dockerfile="Dockerfile", tag="x:1", build_args={}, target="", labels={})
    argv, _ = buildkit.command(
        cli,
        request,
        url="tcp://builder-1:2376",
        network="",
        iidfile="/t/iid",
        environ={},
        tls=tls,
    )
    flags = [
        "--tlsverify",
        "--tlscacert=/t/ca.pem",
        "--tlscert=/t/cert.pem",
        "--tlskey=/t/key.pem",
    ]
    # Global flags: before the command, or the CLI takes them for build's own and refuses.
    assert argv[: argv.index("build")] == [cli.path, "-H", "tcp://builder-1:2376", *flags]


# The pool, with engines in memory --------------------------------------------------------


class MemoryEngine(FakeDocker):
    """The test kit's fake engine with what the pool needs besides: a ping and a close. Its
    builds wait for `finish`; `down` makes every call fail as an engine that went away."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.down = False
        self.finish = asyncio.Event()
        self.contexts: list[bytes] = []
        self.during_build = self._building

    async def build(
        self,
        context: BinaryIO,
        request: BuildRequest,
        *,
        on_first_step: Callable[[], None] | None = None,
    ) -> BuildResult:
        self._answer()
        self.contexts.append(context.read())
        return await super().build(context, request, on_first_step=on_first_step)

    async def _building(self, tag: str) -> None:
        await self.finish.wait()
        self._answer()

    async def push(self, image: str, *, auth: RegistryAuth | None) -> str:
        self._answer()
        return await super().push(image, auth=auth)

    async def local_images(self, *, label: str) -> list[LocalImage]:
        self._answer()
        return await super().local_images(label=label)

    async def remove_image(self, tag: str) -> None:
        self._answer()
        await super().remove_image(tag)

    async def ping(self) -> None:
        self._answer()

    async def close(self) -> None:
        return None

    def _answer(self) -> None:
        if self.down:
            raise DockerUnavailable(f"Docker engine unavailable: {self.name} is gone")


def memory_pool(*names: str, max_per_engine: int = 1) -> tuple[EnginePool, list[MemoryEngine]]:
    engines = [MemoryEngine(name) for name in names]
    by_url: dict[str, Engine] = {f"unix:///{engine.name}.sock": engine for engine in engines}
    return EnginePool(by_url, max_per_engine=max_per_engine), engines


async def build(
    pool: EnginePool, tag: str, context: BinaryIO, *, cache_from: Sequence[str] = ()
) -> BuildResult:
    return await pool.build(
        context,
        BuildRequest(
            dockerfile="Dockerfile",
            tag=tag,
            build_args={},
            target="",
            labels={},
            cache_from=cache_from,
            cache_auth=CACHE_AUTH,
        ),
    )


async def test_a_build_waits_while_every_engine_is_full() -> None:
    pool, (a, b) = memory_pool("a", "b", max_per_engine=1)
    first, second, third = (
        asyncio.create_task(build(pool, f"app:{n}", io.BytesIO(b"tar"))) for n in (1, 2, 3)
    )
    await eventually(lambda: len(a.builds) + len(b.builds) == 2, what="two builds")
    assert (a.builds, b.builds) == (["app:1"], ["app:2"])
    for _ in range(20):
        await asyncio.sleep(0)  # the third build has every chance to start
    assert not third.done() and len(a.builds) + len(b.builds) == 2  # no third place
    b.finish.set()
    await second
    await third
    assert b.builds == ["app:2", "app:3"]  # the place b freed
    a.finish.set()
    await first


async def test_a_build_moved_to_another_engine_reads_its_context_from_the_start() -> None:
    pool, (a, b) = memory_pool("a", "b")
    b.finish.set()
    started = asyncio.create_task(build(pool, "app:1", io.BytesIO(b"the whole context")))
    await eventually(lambda: a.builds == ["app:1"], what="the build on a")
    a.down = True
    a.finish.set()
    await started
    assert b.contexts == [b"the whole context"]
    await pool.push("app:1", auth=None)
    assert (a.pushes, b.pushes) == ([], ["app:1"])  # pushed from where it was built


async def test_a_tag_goes_to_the_engine_that_built_the_image_and_so_does_its_push() -> None:
    pool, (a, b) = memory_pool("a", "b")
    builds = [asyncio.create_task(build(pool, f"app:{n}", io.BytesIO(b"tar"))) for n in (1, 2)]
    await eventually(lambda: (a.builds, b.builds) == (["app:1"], ["app:2"]), what="spread")
    a.finish.set()
    b.finish.set()
    await asyncio.gather(*builds)
    await pool.tag("app:2", "registry.test/app:cache-test")
    await pool.push("registry.test/app:cache-test", auth=None)
    assert (a.tags, b.tags) == ({}, {"registry.test/app:cache-test": "app:2"})
    assert (a.pushes, b.pushes) == ([], ["registry.test/app:cache-test"])
    with pytest.raises(DockerUnavailable, match="no engine of the pool built it"):
        await pool.tag("app:never-built", "registry.test/app:cache-test")


async def test_local_images_are_listed_on_every_engine_that_answers_and_removed_from_all() -> None:
    pool, (a, b) = memory_pool("a", "b")
    a.images["app:1"] = ("sha256:1", {"reconciler.app": "web"})
    b.images["app:1"] = ("sha256:1", {"reconciler.app": "web"})
    b.images["app:2"] = ("sha256:2", {"reconciler.app": "web"})
    assert sorted(i.tags for i in await pool.local_images(label="reconciler.app=web")) == [
        ("app:1",),
        ("app:1",),
        ("app:2",),
    ]
    a.down = True
    assert [i.tags for i in await pool.local_images(label="reconciler.app=web")] == [
        ("app:1",),
        ("app:2",),
    ]
    with pytest.raises(DockerUnavailable, match="a is gone"):
        await pool.remove_image("app:1")  # tried on b all the same
    assert (sorted(a.images), sorted(b.images)) == (["app:1"], ["app:2"])


async def test_an_image_no_engine_of_the_pool_built_is_docker_unavailable() -> None:
    pool, _ = memory_pool("a")
    with pytest.raises(DockerUnavailable, match="no engine of the pool built it"):
        await pool.push("app:never-built", auth=None)


async def test_every_engine_down_is_docker_unavailable_naming_each() -> None:
    pool, engines = memory_pool("a", "b")
    for engine in engines:
        engine.down = True
    with pytest.raises(DockerUnavailable) as caught:
        await build(pool, "app:1", io.BytesIO(b"tar"))
    assert "unix:///a.sock: Docker engine unavailable: a is gone" in str(caught.value)
    assert "unix:///b.sock" in str(caught.value)


async def test_the_engine_of_only_the_newest_builds_is_remembered() -> None:
    pool, (a,) = memory_pool("a")
    a.finish.set()
    for number in range(REMEMBERED_IMAGES + 1):
        await build(pool, f"app:{number}", io.BytesIO(b"tar"))
    with pytest.raises(DockerUnavailable):
        await pool.push("app:0", auth=None)
    await pool.push(f"app:{REMEMBERED_IMAGES}", auth=None)
    assert a.pushes == [f"app:{REMEMBERED_IMAGES}"]


# The pool, with real engines -------------------------------------------------------------


def tar_of(files: Mapping[str, str]) -> BinaryIO:
    """A build context, as the git adapter gives it: an uncompressed tar, seekable."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, text in files.items():
            content = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    out.seek(0)
    return out


def engine_of(logged: list[MutableMapping[str, Any]], tag: str) -> list[str]:
    """The engines the pool sent the build of `tag` to, in order."""
    return [e["engine"] for e in logged if e["event"] == "build_engine" and e["image"] == tag]


@dataclass
class Rig:
    """What the tests with real engines share: the shared engine's URL, the base image, and
    the pools and images to clean up after one test."""

    shared: str
    base_image: str
    pools: list[EnginePool] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # on the shared engine

    def pool(self, *urls: str, max_per_engine: int, **options: Any) -> EnginePool:
        """A pool of BuildKit engines whose RUN steps have no network (none is needed)."""
        engines: dict[str, Engine] = {
            url: DockerEngine(url=url, builder="buildkit", network="none") for url in urls
        }
        self.pools.append(EnginePool(engines, max_per_engine=max_per_engine, **options))
        return self.pools[-1]

    def tag(self, name: str, *, registry: str = "") -> str:
        """A fresh tag (in `registry`'s namespace when given), removed at the end."""
        repository = f"reconciler-test/engines-{name}-{uuid.uuid4().hex[:10]}"
        tag = f"{registry}/{repository}:one" if registry else f"{repository}:one"
        self.images.append(tag)
        return tag

    def slow(self, seconds: int = 2) -> BinaryIO:
        """A context whose build stays in a RUN step for `seconds`, unlike any other build."""
        step = f"RUN sleep {seconds} && echo {uuid.uuid4().hex} > /token"
        return tar_of({"Dockerfile": f"FROM {self.base_image}\n{step}\n"})


@pytest.fixture
async def rig(docker_engine: str, base_image: str) -> AsyncIterator[Rig]:
    made = Rig(shared=docker_engine, base_image=base_image)
    yield made
    for pool in made.pools:
        await pool.close()
    if made.images:
        docker(docker_engine, "image", "rm", "-f", *made.images)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def spare(docker_engine: str, base_image: str, certificates: Certificates) -> Iterator[Dockerd]:
    """A second engine, on a Unix socket and on 127.0.0.1 with TLS, with the base image."""
    engine = Dockerd("spare", tls=certificates)
    try:
        engine.start()
        engine.load_image(base_image)
        yield engine
    finally:
        engine.close()


@pytest.fixture
def own_engine() -> Iterator[Dockerd]:
    """A dockerd, not started, that a test may start late or kill; removed at the end."""
    engine = Dockerd("own")
    yield engine
    engine.close()


@pytest.fixture
async def registry_api() -> AsyncIterator[Registry]:
    client = Registry()
    yield client
    await client.close()


async def in_registry(registry_api: Registry, image: str) -> bool:
    name, _, tag = image.rpartition(":")
    host, _, repository = name.partition("/")
    return await registry_api.has_tag(registry=host, repository=repository, tag=tag, auth=None)


@pytest.mark.slow
async def test_builds_at_once_spread_over_the_engines_and_wait_when_all_are_full(
    rig: Rig, spare: Dockerd
) -> None:
    """max_per_engine = 1 and two engines: two builds run side by side, one on each; the
    third runs where a place freed up, never as a second build on a busy engine."""
    pool = rig.pool(rig.shared, spare.url, max_per_engine=1)
    tags = [rig.tag("spread") for _ in range(3)]
    with capture_logs() as logged:
        await asyncio.gather(*(build(pool, tag, rig.slow()) for tag in tags))
    first, second, third = (engine_of(logged, tag) for tag in tags)
    assert (first, second) == ([rig.shared], [spare.url])
    assert has_image(rig.shared, tags[0]) and not has_image(spare.url, tags[0])
    assert has_image(spare.url, tags[1]) and not has_image(rig.shared, tags[1])
    assert len(third) == 1 and has_image(third[0], tags[2])
    assert all(e["running"] == 1 for e in logged if e["event"] == "build_engine")


@pytest.mark.slow
async def test_a_build_goes_to_the_least_busy_engine_not_the_first_listed(
    rig: Rig, spare: Dockerd
) -> None:
    """Both engines have room (2 each); the first runs a build, so the next goes to the other."""
    pool = rig.pool(rig.shared, spare.url, max_per_engine=2)
    busy, next_one = rig.tag("busy"), rig.tag("least-busy")
    with capture_logs() as logged:
        running = asyncio.create_task(build(pool, busy, rig.slow(4)))
        await eventually(lambda: bool(engine_of(logged, busy)), what="the busy build")
        await build(pool, next_one, rig.slow(0))
        assert not running.done()
        await running
    assert engine_of(logged, busy) == [rig.shared]
    assert engine_of(logged, next_one) == [spare.url]
    assert has_image(spare.url, next_one) and not has_image(rig.shared, next_one)


@pytest.mark.slow
async def test_an_engine_that_cannot_be_reached_is_skipped_until_it_answers_again(
    rig: Rig, own_engine: Dockerd
) -> None:
    """Listed first but with nothing on its socket: builds land on the other engine, and only
    the first even tries it. Once it answers and its backoff is over, builds go to it again."""
    late = own_engine
    now = [0.0]
    pool = rig.pool(late.url, rig.shared, max_per_engine=1, clock=lambda: now[0])
    first, second, third = (rig.tag("skip") for _ in range(3))
    with capture_logs() as logged:
        await build(pool, first, rig.slow(0))
        await build(pool, second, rig.slow(0))
        await asyncio.to_thread(late.start)
        await asyncio.to_thread(late.load_image, rig.base_image)
        now[0] += 60  # past any backoff (at most 30 s)
        await build(pool, third, rig.slow(0))
    assert engine_of(logged, first) == [late.url, rig.shared]
    assert engine_of(logged, second) == [rig.shared]  # not tried while its backoff runs
    unreachable = [e for e in logged if e["event"] == "engine_unreachable"]
    assert [e["engine"] for e in unreachable] == [late.url]
    assert engine_of(logged, third) == [late.url]
    assert {"event": "engine_answers_again", "engine": late.url, "log_level": "info"} in logged
    assert has_image(rig.shared, first) and has_image(late.url, third)


@pytest.mark.slow
async def test_a_build_whose_engine_dies_is_built_again_on_another_and_only_then_pushed(
    rig: Rig, own_engine: Dockerd, registry_api: Registry, registry: str
) -> None:
    """The engine building the image is killed during a RUN step: the build starts again on
    the other engine and succeeds; the registry has nothing until that engine pushes it."""
    dying = own_engine
    await asyncio.to_thread(dying.start)
    await asyncio.to_thread(dying.load_image, rig.base_image)
    pool = rig.pool(dying.url, rig.shared, max_per_engine=1)
    tag = rig.tag("dies", registry=registry)
    with capture_logs() as logged:
        building = asyncio.create_task(build(pool, tag, rig.slow(3)))
        await eventually(dying.running_a_step, what="the RUN step", timeout=30)
        dying.kill()
        assert not await in_registry(registry_api, tag)
        result = await building
        assert not await in_registry(registry_api, tag)  # built; of neither attempt a layer
        digest = await pool.push(tag, auth=None)
    assert await in_registry(registry_api, tag)
    assert digest.startswith("sha256:") and result.image_id
    assert engine_of(logged, tag) == [dying.url, rig.shared]
    assert [e["engine"] for e in logged if e["event"] == "engine_unreachable"] == [dying.url]
    assert has_image(rig.shared, tag)


@pytest.mark.slow
async def test_an_engine_that_never_built_the_app_reuses_the_layers_another_pushed(
    rig: Rig, spare: Dockerd, registry: str
) -> None:
    """The first engine builds and pushes commit 1. While it is busy, the spare one builds
    commit 2 (one file changed, copied after two RUN steps) with commit 1's image as cache:
    both RUN steps are cache hits, though the spare engine never ran them."""
    pool = rig.pool(rig.shared, spare.url, max_per_engine=1)
    one = rig.tag("cache", registry=registry)
    two, busy = one.rpartition(":")[0] + ":two", rig.tag("busy")
    rig.images.append(two)
    token = uuid.uuid4().hex  # no engine has these steps cached from an earlier run

    def commit(version: str) -> BinaryIO:
        dockerfile = (
            f"FROM {rig.base_image}\nRUN echo {token} > /prepared\nRUN echo more >> /prepared\n"
            "COPY app.txt /app.txt\n"
        )
        return tar_of({"Dockerfile": dockerfile, "app.txt": version})

    with capture_logs() as logged:
        first = await build(pool, one, commit("1"))
        await pool.push(one, auth=None)
        running = asyncio.create_task(build(pool, busy, rig.slow(4)))
        await eventually(lambda: bool(engine_of(logged, busy)), what="the busy build")
        second = await build(pool, two, commit("2"), cache_from=[one])
        await running
    assert engine_of(logged, one) == engine_of(logged, busy) == [rig.shared]
    assert engine_of(logged, two) == [spare.url]
    assert first.cached_steps == 0
    assert second.cached_steps == 2  # the RUN steps; the COPY of the changed file ran
    assert not has_image(spare.url, one)  # its hits came through the registry


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["buildkit", "classic"])
async def test_a_tcp_engine_with_tls_client_certificates_builds_and_pushes(
    builder: str,
    *,
    spare: Dockerd,
    certificates: Certificates,
    registry_api: Registry,
    registry: str,
    rig: Rig,
) -> None:
    """Opened as the daemon opens `[build].engines`: the engine API (aiodocker) and the docker
    CLI (BuildKit) both reach the engine over TLS with the client's certificate."""
    pool = EnginePool.open(
        [spare.tcp_url],
        tls=certificates.client,
        builder=builder,
        network="none",
        max_per_engine=1,
    )
    rig.pools.append(pool)
    tag = rig.tag("tls", registry=registry)
    await build(pool, tag, rig.slow(0))
    digest = await pool.push(tag, auth=None)
    assert digest.startswith("sha256:")
    assert await in_registry(registry_api, tag)
    assert spare.has_image(tag)


@pytest.mark.slow
async def test_a_tcp_engine_refuses_clients_without_a_certificate_of_its_ca(
    spare: Dockerd, certificates: Certificates, tmp_path: Path
) -> None:
    """So the certificates above are what let the pool in: a stranger's, or none, is
    DockerUnavailable (and said in one line)."""
    strangers = make_certificates(tmp_path / "strangers")
    ca, cert, key = (str(path) for path in certificates.client)
    stranger = buildkit.EngineTls(ca, str(strangers.client_cert), str(strangers.client_key))
    for engine in (DockerEngine(url=spare.tcp_url, tls=stranger), DockerEngine(url=spare.tcp_url)):
        try:
            with pytest.raises(DockerUnavailable) as caught:
                await engine.ping()
            assert "\n" not in str(caught.value)
        finally:
            await engine.close()
    trusted = DockerEngine(url=spare.tcp_url, tls=buildkit.EngineTls(ca, cert, key))
    try:
        await trusted.ping()
    finally:
        await trusted.close()
