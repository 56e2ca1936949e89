"""Housekeeping after a rollout, as the pass runs it: what the app's memory and the rollout
protect, the operator's pinned image kept, and never a failed deploy.

(The clean-up itself, its decisions and the adapter are tested in tests/unit/app/
test_housekeeping.py.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from reconciler.app.stages.housekeeping import after_rollout
from reconciler.decisions.housekeeping import (
    APP_TAG,
    Deleted,
    StoredImage,
    TaskDefinitionRevision,
)
from reconciler.decisions.model import Attempt, Hold, Pin, ServiceState, utcnow
from tests.support.passes import REVISION, Pass, a_pass


def arn(revision: int) -> str:
    return f"arn:aws:ecs:us-east-1:123456789012:task-definition/web:{revision}"


def sha(n: int) -> str:
    return f"{n:040x}"


@dataclass
class Aws:
    """The family's revisions 1..5 (the fake service runs 1), and the repository's images."""

    revisions: dict[str, TaskDefinitionRevision] = field(
        default_factory=lambda: {
            arn(n): TaskDefinitionRevision(
                arn(n), "web", n, tags={APP_TAG: "web"}, images=(f"elsewhere/web:v{n}",)
            )
            for n in range(1, 6)
        }
    )
    stored: list[StoredImage] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    broken: bool = False  # every listing raises an error housekeeping does not expect

    async def service(self, *, cluster: str, service: str) -> ServiceState:
        raise AssertionError("the stage is given the service")

    async def in_flight_task_definitions(self, *, cluster: str, service: str) -> dict[str, str]:
        return {}

    async def task_definitions(self, family: str) -> list[TaskDefinitionRevision]:
        if self.broken:
            raise RuntimeError("a bug")
        return list(self.revisions.values())

    async def task_definition(self, arn: str) -> TaskDefinitionRevision:
        return self.revisions[arn]

    async def images(self, repository: str) -> list[StoredImage]:
        return list(self.stored)

    async def deregister(self, arn: str) -> None:
        del self.revisions[arn]

    async def delete_images(self, repository: str, digests: Sequence[str]) -> list[Deleted]:
        self.deleted += digests
        return [Deleted(d) for d in digests]

    def left(self) -> list[int]:
        return sorted(r.revision for r in self.revisions.values())


def attempt(run: Pass, task_definition: int, previous: int) -> Attempt:
    return Attempt(REVISION, arn(task_definition), arn(previous), run.app.fingerprint())


PROTECTED = {
    "only the live revision and the newest": (None, None, None, [1, 5]),
    "what ran before the rollout": (3, None, None, [1, 3, 5]),
    "a hold's rollback target": (None, 2, None, [1, 2, 5]),
    "both sides of an attempted deploy": (None, None, (4, 3), [1, 3, 4, 5]),
}


@pytest.mark.parametrize(
    ("previous", "rollback_to", "attempted", "left"), PROTECTED.values(), ids=PROTECTED.keys()
)
async def test_what_stays_after_a_rollout(
    previous: int | None,
    rollback_to: int | None,
    attempted: tuple[int, int] | None,
    left: list[int],
) -> None:
    run = a_pass(cleanup={"keep_task_definitions": 1})
    if rollback_to is not None:
        run.memory.hold = Hold("f" * 40, "failed", "fp", rollback_to=arn(rollback_to))
    if attempted is not None:
        run.memory.attempt = attempt(run, *attempted)
    aws = Aws()
    report = await after_rollout(run.ctx, aws, previous=arn(previous) if previous else None)
    assert report is not None and not report.failed
    assert aws.left() == left


async def test_the_image_an_operator_pinned_stays() -> None:
    run = a_pass(cleanup={"keep_images": 1})
    run.memory.pin = Pin(revision=sha(2), config_fingerprint=run.app.fingerprint())
    now = utcnow()
    aws = Aws(
        stored=[
            StoredImage(f"sha256:{n:064x}", (sha(n),), now - timedelta(hours=10 - n))
            for n in range(1, 5)
        ]
    )
    assert await after_rollout(run.ctx, aws) is not None
    assert sorted(aws.deleted) == [f"sha256:{1:064x}", f"sha256:{3:064x}"]  # 4 is the newest


async def test_an_unexpected_error_in_housekeeping_never_fails_the_deploy() -> None:
    run = a_pass(cleanup={"keep_task_definitions": 1})
    aws = Aws(broken=True)
    with capture_logs() as logged:
        assert await after_rollout(run.ctx, aws) is None
    assert [(e["event"], e["error"]) for e in logged] == [("cleanup_failed", "RuntimeError: a bug")]
    assert aws.left() == [1, 2, 3, 4, 5]
