"""The build cache through the registry: an image pushed by one host carries its BuildKit
cache inline, so a host that never built the app gets cache hits from it."""

from __future__ import annotations

import io
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reconciler.adapters.docker import DockerEngine
from reconciler.adapters.registry import RegistryAuth
from reconciler.adapters.values import BuildRequest

pytestmark = [pytest.mark.slow]


def context_tar(tmp_path: Path, base_image: str, version: str) -> Path:
    files = {
        "Dockerfile": (
            f"FROM {base_image}\nRUN echo prepared > /prepared\nCOPY app.txt /app.txt\n"
        ).encode(),
        "app.txt": version.encode(),
    }
    path = tmp_path / f"context-{version}.tar"
    with tarfile.open(path, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def as_a_new_host(*images: str) -> None:
    """Forget every local trace of the build: its images and the builder's cache."""
    for image in images:
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, check=False)
    subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True, check=True)


def image_exists(tag: str) -> bool:
    found = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    return found.returncode == 0


@pytest.fixture
async def engine(docker_engine: str) -> AsyncIterator[DockerEngine]:
    engine = DockerEngine(url=docker_engine, builder="buildkit", network="none")
    yield engine
    await engine.close()


async def build(engine: DockerEngine, context: Path, tag: str, *, cache_from: list[str]) -> int:
    with context.open("rb") as tar:
        result = await engine.build(
            tar,
            BuildRequest(
                dockerfile="Dockerfile",
                tag=tag,
                build_args={},
                target="",
                labels={},
                cache_from=cache_from,
                cache_auth=RegistryAuth(username="AWS", password="unused-here", server="127.0.0.1"),
            ),
        )
    return result.cached_steps


async def test_a_new_host_reuses_the_layers_another_host_pushed(
    engine: DockerEngine, registry: str, base_image: str, tmp_path: Path
) -> None:
    repository = f"{registry}/reconciler-test/cache-{uuid.uuid4().hex[:10]}"
    first, second = f"{repository}:one", f"{repository}:two"
    await build(engine, context_tar(tmp_path, base_image, "1"), first, cache_from=[])
    pushed = await engine.push(first, auth=None)
    assert pushed.startswith("sha256:")

    as_a_new_host(first)
    with_cache = await build(
        engine, context_tar(tmp_path, base_image, "2"), second, cache_from=[first]
    )
    as_a_new_host(first, second)
    without = await build(engine, context_tar(tmp_path, base_image, "2"), second, cache_from=[])
    assert with_cache >= 1  # the RUN step came from the pushed image's inline cache
    assert without == 0  # the control: nothing local to reuse


async def test_a_cache_image_that_cannot_be_read_does_not_fail_the_build(
    engine: DockerEngine, registry: str, base_image: str, tmp_path: Path
) -> None:
    missing = f"{registry}/reconciler-test/no-such-cache:{uuid.uuid4().hex[:8]}"
    tag = f"reconciler-test/cache-miss:{uuid.uuid4().hex[:8]}"
    await build(engine, context_tar(tmp_path, base_image, "3"), tag, cache_from=[missing])
    assert image_exists(tag)
    as_a_new_host(tag)


async def test_a_broken_build_names_its_failing_step_not_a_missing_cache_image(
    engine: DockerEngine, registry: str, base_image: str, tmp_path: Path
) -> None:
    from reconciler.errors import BuildFailed

    missing = f"{registry}/reconciler-test/no-such-cache:{uuid.uuid4().hex[:8]}"
    context = tmp_path / "broken.tar"
    dockerfile = f"FROM {base_image}\nRUN exit 3\n".encode()
    with tarfile.open(context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    with pytest.raises(BuildFailed) as failed:
        await build(
            engine, context, f"reconciler-test/broken:{uuid.uuid4().hex[:8]}", cache_from=[missing]
        )
    assert "RUN exit 3" in str(failed.value)
    assert "importing cache manifest" not in str(failed.value)
