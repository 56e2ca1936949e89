"""Fixtures for the real services: dockerd, the registry, the moto server, git; and each
test's tier, given by the folder it lives in (tests/unit, tests/integration, tests/e2e)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sandbox.aws import SandboxAws
from tests.support import services

TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.path)).relative_to(Path(__file__).parent).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session", autouse=True)
def fake_aws_credentials() -> Iterator[None]:
    """moto accepts any credentials, but botocore wants some; without them it would look
    for an instance role at the metadata address, which is not loopback."""
    saved = dict(os.environ)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        os.environ[key] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def aws() -> Iterator[SandboxAws]:
    """The sandbox AWS (moto server with rollouts and service deployments), one per session."""
    with SandboxAws() as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The Docker engine's socket URL; skips (or fails in CI) when no engine answers."""
    services.require(services.docker_is_up(), f"no Docker engine at {services.DOCKER_SOCKET}")
    return f"unix://{services.DOCKER_SOCKET}"


@pytest.fixture(scope="session")
def registry() -> str:
    """The local registry's host:port; skips (or fails in CI) when it does not answer."""
    services.require(services.registry_is_up(), f"no registry at {services.REGISTRY}")
    return services.REGISTRY


@pytest.fixture(scope="session")
def base_image(docker_engine: str) -> str:
    """A local busybox base image for Dockerfiles with RUN steps."""
    return services.ensure_base_image()
