"""End-to-end fixtures: the sandbox AWS (moto server with rollouts), dockerd, the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sandbox.aws import SandboxAws
from tests.support.world import World


@pytest.fixture
def world(tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str) -> Iterator[World]:
    aws.faults.clear()
    yield World.create(tmp_path, aws, registry)
    aws.faults.clear()


@pytest.fixture
def other(tmp_path: Path, aws: SandboxAws, registry: str, world: World) -> World:
    """A second app with its own repository, cluster and service, in the same sandbox."""
    return World.create(tmp_path / "other", aws, registry)
