"""The test stage on the real engine: built beside the production image from one export of
the commit, the steps both stages share done once, its image pushed as the app's cache
image for new hosts; and the images of older revisions removed after a rollout.

The build stage runs as the daemon runs it, with the real git mirrors and the real Docker
engine (BuildKit through the CLI, RUN steps on the host network: the test engine has no
bridge); the other seams are the in-memory fakes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from structlog.testing import capture_logs

from reconciler.adapters.docker import DockerEngine
from reconciler.adapters.git import GitMirrors, GitSource
from reconciler.app.stages.build import TestStage, build, cache_image, stage_image
from reconciler.app.stages.local_images import remove_old_local_images
from reconciler.app.stages.push import keeping_as_cache, push
from reconciler.app.stages.test import run_beside
from reconciler.decisions.model import Desired, ImageRef, Live
from tests.support.gitrepo import GitRepo
from tests.support.passes import Pass, a_pass

pytestmark = [pytest.mark.slow]


def dockerfile(base_image: str) -> str:
    """Two stages on one `deps` stage; the test stage installs more of its own, as dev
    dependencies are. Each RUN step writes random bytes: a step run twice leaves two
    different layers."""
    return f"""\
FROM {base_image} AS deps
COPY deps.txt /deps.txt
RUN head -c 16 /dev/urandom > /installed && sleep 1
FROM deps AS test
RUN head -c 16 /dev/urandom > /dev-installed
COPY app.txt /app.txt
COPY test.txt /test.txt
FROM deps AS production
COPY app.txt /app.txt
"""


class CountedMirrors(GitMirrors):
    """The real mirrors, counting the contexts exported."""

    exports = 0

    async def export_context(
        self, source: GitSource, *, commit: str, context: str, dockerfile: str
    ) -> BinaryIO:
        self.exports += 1
        return await super().export_context(
            source, commit=commit, context=context, dockerfile=dockerfile
        )


def layers(image: str) -> list[str]:
    out = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, check=True, text=True
    )
    return list(json.loads(out.stdout)[0]["RootFS"]["Layers"])


def remove_images(*images: str) -> None:
    subprocess.run(["docker", "image", "rm", "-f", *images], capture_output=True, check=False)


@pytest.fixture
async def engine(docker_engine: str) -> AsyncIterator[DockerEngine]:
    client = DockerEngine(url=docker_engine, builder="buildkit", network="host")
    yield client
    await client.close()


@pytest.fixture
def repo(tmp_path: Path, base_image: str) -> GitRepo:
    repo = GitRepo(tmp_path / "app")
    repo.commit(
        {
            "Dockerfile": dockerfile(base_image),
            "deps.txt": f"deps {uuid.uuid4().hex}\n",  # no earlier run's cache answers
            "app.txt": "v1\n",
            "test.txt": "tests\n",
        },
        "first",
    )
    return repo


def real_pass(
    tmp_path: Path,
    repo: GitRepo,
    engine: DockerEngine,
    *,
    name: str = "",
    registry: str = "127.0.0.1:5000",
    live: dict[str, str] | None = None,
) -> Pass:
    """A pass of app `name` on the repository's head with the real mirrors (under
    `tmp_path`) and engine, its image named in `registry`; `live` is what the service runs
    (container -> image)."""
    name = name or f"stage-{uuid.uuid4().hex[:10]}"
    head = repo.git("rev-parse", "HEAD")
    run = a_pass(
        revision=head,
        name=name,
        repo=repo.url,
        ecr_repository=name,
        test={"command": ["cat", "/test.txt"], "target": "test"},
    )
    mirrors = CountedMirrors(tmp_path / "state")
    session = run.ctx.session
    session.io = dataclasses.replace(session.io, git=mirrors, docker=engine)
    observed = run.observe()
    run.ctx.observation = dataclasses.replace(
        observed,
        desired=Desired(revision=head, image=ImageRef(registry, name, head)),
        live=Live(service=observed.live.service, images=live or {}),
    )
    return run


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    images: list[str] = []
    yield images
    remove_images(*images)


async def test_the_test_stage_builds_beside_the_production_image_sharing_its_steps(
    tmp_path: Path, repo: GitRepo, engine: DockerEngine, cleanup: list[str]
) -> None:
    """One export feeds both builds; the RUN step of the stage both build on ran once (both
    images carry the very same layer of random bytes); each build says what it took."""
    run = real_pass(tmp_path, repo, engine)
    production = str(run.ctx.observed.desired.image)
    local = stage_image(run.app.name, run.ctx.revision)
    cleanup += [production, local]
    with capture_logs() as logged:
        stage = await build(run.ctx)
    assert stage == TestStage(image=local)
    mirrors = run.ctx.io.git
    assert isinstance(mirrors, CountedMirrors) and mirrors.exports == 1
    shared = layers(production)[:3]  # base, COPY deps.txt, RUN
    assert layers(local)[:3] == shared
    events = {e["event"]: dict(e) for e in logged}
    finished, beside = events["build_finished"], events["test_build_finished"]
    assert beside["image"] == local
    assert beside["seconds"] > 0 and finished["seconds"] > 0
    assert {"cached_steps", "image_id"} <= beside.keys() & finished.keys()


def as_a_new_host(*images: str) -> None:
    """Forget every local trace of the builds: their images and the builder's cache."""
    remove_images(*images)
    subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True, check=True)


async def test_a_new_host_finds_the_test_stages_layers_in_the_registry(
    tmp_path: Path, repo: GitRepo, engine: DockerEngine, registry: str, cleanup: list[str]
) -> None:
    """The test stage's image is pushed under the app's cache tag once its test passed
    (beside the production build); a host with an empty
    builder cache, building the next commit, takes the dev dependencies' step from it
    instead of running it again (same layer of random bytes)."""
    first = real_pass(tmp_path / "host-1", repo, engine, registry=registry)
    stage = await build(first.ctx, then=functools.partial(run_beside, first.ctx))
    assert stage is not None and stage.failure is None
    assert stage.run is not None and stage.run.passed  # beside the build
    cache_push = keeping_as_cache(first.ctx, stage)
    assert cache_push is not None
    await push(first.ctx)
    await cache_push
    image, cache = str(first.ctx.observed.desired.image), cache_image(first.ctx)
    assert cache == f"{registry}/{first.app.name}:cache-test"
    installed = layers(stage.image)[:4]  # base, COPY deps.txt, RUN deps, RUN dev deps
    cleanup += [image, stage.image, cache]
    as_a_new_host(image, stage.image, cache)

    repo.commit({"app.txt": "v2\n"}, "second")
    second = real_pass(
        tmp_path / "host-2",
        repo,
        engine,
        name=first.app.name,
        registry=registry,
        live={"app": image},
    )
    with capture_logs() as logged:
        again = await build(second.ctx)
    assert again is not None and again.failure is None
    cleanup += [str(second.ctx.observed.desired.image), again.image]
    assert layers(again.image)[:4] == installed
    [beside] = [e for e in logged if e["event"] == "test_build_finished"]
    assert beside["cached_steps"] >= 3


def build_by_hand(tag: str) -> None:
    """An image nobody labelled for an app, under a revision-like tag of its repository."""
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"],
        input=b"FROM scratch\nLABEL made=by-hand\n",
        capture_output=True,
        check=True,
    )


def present(image: str) -> bool:
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return found.returncode == 0


async def test_after_a_rollout_the_images_of_older_revisions_leave_the_engine(
    tmp_path: Path, repo: GitRepo, engine: DockerEngine, cleanup: list[str]
) -> None:
    """Three revisions built, the third rolled out over the second: the first's production
    image and test stage are removed; the second's and the third's stay, and so do the cache
    image and an image of the same repository nobody labelled for the app."""
    runs: list[Pass] = []
    for number in (1, 2, 3):
        if number > 1:
            repo.commit({"app.txt": f"v{number}\n"}, f"commit {number}")
        run = real_pass(
            tmp_path / f"pass-{number}",
            repo,
            engine,
            name=runs[0].app.name if runs else "",
        )
        stage = await build(run.ctx)
        assert stage is not None
        cleanup += [str(run.ctx.observed.desired.image), stage.image]
        runs.append(run)
    first, second, third = (str(r.ctx.observed.desired.image) for r in runs)
    tests = [stage_image(r.app.name, r.ctx.revision) for r in runs]
    cache = cache_image(third_ctx := runs[2].ctx)
    assert cache is not None
    await engine.tag(tests[2], cache)
    by_hand = first.rsplit(":", 1)[0] + ":" + "f" * 40
    build_by_hand(by_hand)
    cleanup += [cache, by_hand]

    await remove_old_local_images(third_ctx, previous=[second])

    assert [present(i) for i in (first, tests[0])] == [False, False]
    assert all(present(i) for i in (second, tests[1], third, tests[2], cache, by_hand))
