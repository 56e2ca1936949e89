"""Promote: the image the source app proved, copied into this app's repository through the
registry instead of built again."""

from __future__ import annotations

import pytest

from reconciler.adapters.ports import Adapters
from reconciler.adapters.registry import RegistryAuth
from reconciler.app.stages.context import PromotionSource
from reconciler.app.stages.promote import promote
from reconciler.decisions.model import Phase
from reconciler.errors import RegistryUnavailable
from tests.support.fakes import (
    REGISTRY,
    FakeDocker,
    FakeEcr,
    FakeEcs,
    FakeGit,
    FakeRegistry,
    FakeSecrets,
)
from tests.support.passes import REVISION, a_pass, app_config

SOURCE_REGISTRY = "staging.test"


class SourceEcr(FakeEcr):
    """The source app's account: another registry, other credentials."""

    async def registry(self) -> str:
        return SOURCE_REGISTRY

    async def auth(self) -> RegistryAuth:
        return RegistryAuth(username="AWS", password="staging-password", server=SOURCE_REGISTRY)


class Copies(FakeRegistry):
    """The registry fake, keeping each copy's source and target."""

    def __init__(self, docker: FakeDocker) -> None:
        super().__init__(docker)
        self.copies: list[tuple[str, str]] = []

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
        digest = await super().copy(
            source_registry=source_registry,
            source_repository=source_repository,
            tag=tag,
            target_registry=target_registry,
            target_repository=target_repository,
            source_auth=source_auth,
            target_auth=target_auth,
        )
        assert source_auth is not None and target_auth is not None
        self.copies.append(
            (
                f"{source_registry}/{source_repository}:{tag} as {source_auth.password}",
                f"{target_registry}/{target_repository}:{tag} as {target_auth.password}",
            )
        )
        return digest


def staging() -> PromotionSource:
    docker = FakeDocker()
    io = Adapters(
        git=FakeGit(REVISION),
        docker=docker,
        registry=FakeRegistry(docker),
        ecr=SourceEcr(),
        ecs=FakeEcs(),
        secrets=FakeSecrets(),
    )
    return PromotionSource(app=app_config("staging", ecr_repository="staging-web"), io=io)


async def test_the_source_image_is_copied_into_the_apps_repository_without_a_build() -> None:
    run = a_pass(promotion=staging(), registry=Copies, promote_from="staging")
    run.observe()
    await promote(run.ctx)
    assert isinstance(run.registry, Copies)
    assert run.registry.copies == [
        (
            f"{SOURCE_REGISTRY}/staging-web:{REVISION} as staging-password",
            f"{REGISTRY}/web:{REVISION} as fake-ecr-password",
        )
    ]
    assert run.docker.builds == [] and run.docker.runs == []
    assert run.docker.pushes == [run.image()]  # the copy shows as pushed to the target
    assert run.status.phase is Phase.PUSHING
    assert run.timed("reconciler_push_seconds") == 1


async def test_a_copy_the_registry_refuses_is_let_through() -> None:
    run = a_pass(promotion=staging(), promote_from="staging")
    run.observe()
    run.registry.fail_next("copy", RegistryUnavailable("503"))
    with pytest.raises(RegistryUnavailable):
        await promote(run.ctx)
    assert run.docker.pushes == []
    assert run.timed("reconciler_push_seconds") == 0
