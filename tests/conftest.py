"""Fixtures for the real services: dockerd, the registry, the moto server, git."""

from __future__ import annotations

import pytest

from tests.support import services


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
