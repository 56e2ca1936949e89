"""The test stage on the real engine: built beside the production image from one export of
the commit, the steps both stages share done once.

The build stage runs as the daemon runs it, with the real git mirrors and the real Docker
engine (BuildKit through the CLI, RUN steps on the host network: the test engine has no
bridge); the other seams are the in-memory fakes.
"""

from __future__ import annotations

import dataclasses
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
from reconciler.app.stages.build import TestStage, build, stage_image
from reconciler.decisions.model import Desired, ImageRef, Live
from tests.support.gitrepo import GitRepo
from tests.support.passes import Pass, a_pass

pytestmark = [pytest.mark.slow]


def dockerfile(base_image: str) -> str:
    """Two stages on one `deps` stage, whose RUN step writes random bytes: a step run twice
    leaves two different layers."""
    return f"""\
FROM {base_image} AS deps
COPY deps.txt /deps.txt
RUN head -c 16 /dev/urandom > /installed && sleep 1
FROM deps AS test
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
    registry: str = "127.0.0.1:5000",
    live: dict[str, str] | None = None,
) -> Pass:
    """A pass of the repository's head with the real mirrors and engine, its image named in
    `registry`; `live` is what the service runs (container -> image)."""
    name = f"stage-{uuid.uuid4().hex[:10]}"
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
