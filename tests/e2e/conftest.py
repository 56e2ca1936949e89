"""End-to-end fixtures: the sandbox AWS (moto server with rollouts), dockerd, the registry."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sandbox.aws import SandboxAws
from tests.support.world import World


@pytest.fixture(scope="session")
def aws() -> Iterator[SandboxAws]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        os.environ[key] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    with SandboxAws() as sandbox:
        yield sandbox


@pytest.fixture
def world(tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str) -> Iterator[World]:
    aws.faults.clear()
    yield World.create(tmp_path, aws, registry)
    aws.faults.clear()
