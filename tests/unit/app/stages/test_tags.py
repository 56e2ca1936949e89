"""Extra tags: moved to the revision that runs once, remembered, and a failed move left for
the next in-sync pass without failing anything."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from reconciler.adapters.registry import RegistryAuth
from reconciler.app.stages.tags import move_extra_tags
from reconciler.errors import RegistryUnavailable
from tests.support.fakes import FakeDocker, FakeRegistry
from tests.support.passes import NEWER, REVISION, a_pass


@dataclass
class Case:
    extra_tags: list[str]
    tagged_before: str | None
    moved: dict[str, str]  # extra tag -> the tag it names afterwards
    tagged_after: str | None


CASES = {
    "no extra tags: nothing asked": Case([], None, {}, None),
    "tags move to the revision and it is remembered": Case(
        ["latest", "stable"], NEWER, {"latest": REVISION, "stable": REVISION}, REVISION
    ),
    "already on the revision: nothing asked": Case(["latest"], REVISION, {}, REVISION),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_move_extra_tags(case: Case) -> None:
    run = a_pass(extra_tags=case.extra_tags)
    run.memory.tagged = case.tagged_before
    run.observe()
    if not case.moved:
        run.registry.fail_next("retag", AssertionError("the registry is not to be asked"))
    await move_extra_tags(run.ctx)
    assert run.registry.tags == case.moved
    assert run.memory.tagged == case.tagged_after
    assert run.written.tagged == (case.tagged_after if case.moved else None)


class RefusesStable(FakeRegistry):
    """A registry that refuses to move `stable` while `down`."""

    def __init__(self, docker: FakeDocker) -> None:
        super().__init__(docker)
        self.down = True

    async def retag(
        self, *, registry: str, repository: str, tag: str, new_tag: str, auth: RegistryAuth | None
    ) -> str:
        if new_tag == "stable" and self.down:
            raise RegistryUnavailable("registry down")
        return await super().retag(
            registry=registry, repository=repository, tag=tag, new_tag=new_tag, auth=auth
        )


async def test_a_move_that_fails_part_way_is_tried_again_in_full_later() -> None:
    run = a_pass(extra_tags=["latest", "stable"], registry=RefusesStable)
    run.memory.tagged = NEWER
    run.observe()
    with capture_logs() as logged:
        await move_extra_tags(run.ctx)  # never raises: the deploy itself succeeded
    assert run.registry.tags == {"latest": REVISION}
    assert run.memory.tagged == NEWER
    assert [e["event"] for e in logged] == ["extra_tag_moved", "extra_tags_not_moved"]

    assert isinstance(run.registry, RefusesStable)
    run.registry.down = False
    await move_extra_tags(run.ctx)
    assert run.registry.tags == {"latest": REVISION, "stable": REVISION}
    assert run.written.tagged == REVISION
