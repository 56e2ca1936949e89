"""Housekeeping: the decisions, one row per rule, and the stage over an in-memory AWS."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from reconciler.adapters.housekeeping import Housekeeping
from reconciler.app.stages.context import PassContext
from reconciler.app.stages.housekeeping import (
    CleanupReport,
    after_rollout,
    clean_up,
    named_by_schedules_of,
    protected_by,
)
from reconciler.app.state import AppMemory
from reconciler.decisions.housekeeping import (
    APP_TAG,
    KEPT_EXTRA_TAG,
    KEPT_NEWEST,
    KEPT_NO_PUSH_TIME,
    KEPT_NOT_FAMILY,
    KEPT_NOT_OURS,
    KEPT_NOT_SHA,
    KEPT_OFF,
    KEPT_REFERENCED,
    KEPT_UNTAGGED,
    Deleted,
    StoredImage,
    TaskDefinitionRevision,
    choose_images,
    choose_task_definitions,
    family_of,
    reference_parts,
    revision_key,
)
from reconciler.decisions.model import Attempt, Deployment, Hold, ServiceState
from reconciler.errors import AwsRejected, AwsUnavailable, ServiceDeploymentsUnreadable
from tests.support.fakes import FakeWorld

APP = "web"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def arn(revision: int, family: str = APP) -> str:
    return f"arn:aws:ecs:us-east-1:123456789012:task-definition/{family}:{revision}"


def sha(n: int) -> str:
    return f"{n:040x}"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def rev(
    revision: int,
    *,
    tag: str | None = APP,
    family: str = APP,
    images: Sequence[str] = (),
) -> TaskDefinitionRevision:
    return TaskDefinitionRevision(
        arn=arn(revision, family),
        family=family,
        revision=revision,
        tags={APP_TAG: tag, "team": "x"} if tag is not None else {"team": "x"},
        images=tuple(images) or (f"123.dkr.ecr.us-east-1.amazonaws.com/web:{sha(revision)}",),
    )


def img(n: int, *tags: str, age: int | None = None) -> StoredImage:
    """Image n, pushed `age` minutes ago (default: n minutes before NOW + 100, so higher n is
    newer); age None with no tags given means a SHA tag of n."""
    pushed = NOW - timedelta(minutes=(100 - n) if age is None else age)
    return StoredImage(digest=digest(n), tags=tags if tags else (sha(n),), pushed_at=pushed)


# --- task definitions ------------------------------------------------------------------------


@dataclass
class TdCase:
    revisions: list[TaskDefinitionRevision]
    keep: int
    removed: list[int]  # revision numbers deregistered
    protected: dict[str, str] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)  # revision -> why it stays


TD_CASES = {
    "keep 0 means never clean": TdCase(
        [rev(n) for n in range(1, 6)], keep=0, removed=[], reasons={1: KEPT_OFF}
    ),
    "keep 2 of 5 tagged": TdCase(
        [rev(n) for n in range(1, 6)],
        keep=2,
        removed=[1, 2, 3],
        reasons={5: KEPT_NEWEST, 4: KEPT_NEWEST},
    ),
    "more kept than there are": TdCase([rev(n) for n in range(1, 4)], keep=10, removed=[]),
    "input order does not matter": TdCase(
        [rev(n) for n in (3, 5, 1, 4, 2)], keep=2, removed=[1, 2, 3]
    ),
    "untagged revisions are never touched and never counted": TdCase(
        [rev(1, tag=None), rev(2, tag=None), rev(3), rev(4, tag=None), rev(5), rev(6)],
        keep=2,
        removed=[3],
        reasons={1: KEPT_NOT_OURS, 4: KEPT_NOT_OURS},
    ),
    "another app's tag is not ours": TdCase(
        [rev(1, tag="api"), rev(2), rev(3)], keep=1, removed=[2], reasons={1: KEPT_NOT_OURS}
    ),
    "another family's revision stays": TdCase(
        [rev(1, family="other"), rev(2), rev(3)],
        keep=1,
        removed=[2],
        reasons={1: KEPT_NOT_FAMILY},
    ),
    # The service was rolled back to revision 3 (a hold's target was 2) while 4..6 were
    # registered later: the newest 2 stay, and so do the running one and the target.
    "rollback in the history: running and target stay besides the newest": TdCase(
        [rev(n) for n in range(1, 7)],
        keep=2,
        protected={arn(3): "live", arn(2): "a hold's rollback target"},
        removed=[1, 4],
        reasons={6: KEPT_NEWEST, 5: KEPT_NEWEST, 3: "live", 2: "a hold's rollback target"},
    ),
    # Protected ones among the newest use up places: keep 2 keeps exactly the newest 2.
    "the newest N include protected ones": TdCase(
        [rev(n) for n in range(1, 6)],
        keep=2,
        protected={arn(5): "live", arn(4): "in the service's deployments (ACTIVE)"},
        removed=[1, 2, 3],
        reasons={5: "newest, live", 4: "newest, in the service's deployments (ACTIVE)"},
    ),
    "protected ones beyond N stay on top of N": TdCase(
        [rev(n) for n in range(1, 6)],
        keep=1,
        protected={arn(5): "live", arn(1): "a hold's rollback target"},
        removed=[2, 3, 4],
        reasons={5: "newest, live", 1: "a hold's rollback target"},
    ),
    "protected by family:revision": TdCase(
        [rev(n) for n in range(1, 5)], keep=1, protected={"web:2": "live"}, removed=[1, 3]
    ),
    "protected untagged ones stay, untagged": TdCase(
        [rev(1, tag=None), rev(2), rev(3)],
        keep=1,
        protected={arn(1): "live"},
        removed=[2],
        reasons={1: "live"},
    ),
    "keep 0 removes nothing even with protected ones": TdCase(
        [rev(n) for n in range(1, 4)], keep=0, protected={arn(1): "live"}, removed=[]
    ),
}


@pytest.mark.parametrize("case", TD_CASES.values(), ids=list(TD_CASES))
def test_choose_task_definitions(case: TdCase) -> None:
    plan = choose_task_definitions(
        case.revisions, app=APP, keep=case.keep, protected=case.protected, family=APP
    )
    assert sorted(r.revision for r in plan.remove) == case.removed
    kept = {r.revision for r, _ in plan.keep}
    # Every candidate is either removed or kept, never both.
    assert kept | {r.revision for r in plan.remove} == {r.revision for r in case.revisions}
    assert not kept & set(case.removed)
    by_revision = {r.revision: r for r in case.revisions}
    for revision, why in case.reasons.items():
        assert plan.reason(by_revision[revision]) == why
    for protected in case.protected:
        assert revision_key(protected) in {revision_key(r.arn) for r, _ in plan.keep}


def test_choose_task_definitions_refuses_a_negative_keep() -> None:
    with pytest.raises(ValueError, match="at least 0"):
        choose_task_definitions([rev(1)], app=APP, keep=-1, protected={})


@pytest.mark.parametrize(
    ("value", "key", "family"),
    [
        (arn(7), "web:7", "web"),
        ("web:7", "web:7", "web"),
        (arn(12, "team-api"), "team-api:12", "team-api"),
    ],
)
def test_revision_keys(value: str, key: str, family: str) -> None:
    assert revision_key(value) == key
    assert family_of(value) == family


# --- images ----------------------------------------------------------------------------------


@dataclass
class ImageCase:
    images: list[StoredImage]
    keep: int
    removed: list[int]  # image numbers (their digests) deleted
    referenced: list[str] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)


IMAGE_CASES = {
    "keep 0 means never clean": ImageCase(
        [img(n) for n in range(1, 5)], keep=0, removed=[], reasons={1: KEPT_OFF}
    ),
    "keep 2 of 5 by push time": ImageCase(
        [img(n) for n in range(1, 6)], keep=2, removed=[1, 2, 3], reasons={5: KEPT_NEWEST}
    ),
    "push time, not listing order": ImageCase(
        [img(1, age=1), img(2, age=50), img(3, age=2), img(4, age=60)], keep=2, removed=[2, 4]
    ),
    "an image with another tag too stays": ImageCase(
        [img(1, sha(1), "latest"), img(2, sha(2), "stable"), img(3), img(4)],
        keep=1,
        removed=[3],
        reasons={1: KEPT_EXTRA_TAG, 2: KEPT_EXTRA_TAG},
    ),
    "untagged images are never touched": ImageCase(
        [StoredImage(digest(1), (), NOW - timedelta(days=9)), img(2), img(3)],
        keep=1,
        removed=[2],
        reasons={1: KEPT_UNTAGGED},
    ),
    "a tag that is not a full SHA stays": ImageCase(
        [img(1, "v1.2.3"), img(2, sha(2)[:12]), img(3, "AB" * 20), img(4)],
        keep=1,
        removed=[],
        reasons={1: KEPT_NOT_SHA, 2: KEPT_NOT_SHA, 3: KEPT_NOT_SHA},
    ),
    "referenced by tag under any host": ImageCase(
        [img(n) for n in range(1, 5)],
        keep=1,
        referenced=[f"127.0.0.1:5000/web:{sha(1)}", f"web:{sha(2)}"],
        removed=[3],
        reasons={1: KEPT_REFERENCED, 2: KEPT_REFERENCED},
    ),
    "referenced by digest": ImageCase(
        [img(n) for n in range(1, 5)],
        keep=1,
        referenced=[f"123.dkr.ecr.us-east-1.amazonaws.com/web@{digest(2)}"],
        removed=[1, 3],
        reasons={2: KEPT_REFERENCED},
    ),
    "the newest N count SHA images with other tags too": ImageCase(
        [img(1), img(2), img(3, sha(3), "latest")], keep=1, removed=[1, 2]
    ),
    "no push time: cannot be ordered, stays": ImageCase(
        [StoredImage(digest(1), (sha(1),), None), img(2), img(3)],
        keep=1,
        removed=[2],
        reasons={1: KEPT_NO_PUSH_TIME},
    ),
    # Some listings show one manifest once per tag: the digest has an extra tag all the same.
    "one digest listed once per tag": ImageCase(
        [
            StoredImage(digest(1), (sha(1),), NOW - timedelta(days=3)),
            StoredImage(digest(1), ("latest",), NOW - timedelta(days=3)),
            img(2),
            img(3),
        ],
        keep=1,
        removed=[2],
        reasons={1: KEPT_EXTRA_TAG},
    ),
}


@pytest.mark.parametrize("case", IMAGE_CASES.values(), ids=list(IMAGE_CASES))
def test_choose_images(case: ImageCase) -> None:
    plan = choose_images(case.images, keep=case.keep, referenced=case.referenced)
    number = {digest(n): n for n in range(100)}
    assert sorted(number[i.digest] for i in plan.remove) == case.removed
    kept = {number[i.digest] for i, _ in plan.keep}
    assert not kept & set(case.removed)
    assert kept | set(case.removed) == {number[i.digest] for i in case.images}
    by_number = {number[i.digest]: i for i, _ in plan.keep}
    for n, why in case.reasons.items():
        assert plan.reason(by_number[n]) == why


@pytest.mark.parametrize(
    ("reference", "tag", "found_digest"),
    [
        ("123.dkr.ecr.us-east-1.amazonaws.com/team/web:abc", "abc", None),
        ("127.0.0.1:5000/web", None, None),
        ("127.0.0.1:5000/web:abc", "abc", None),
        ("web@sha256:d", None, "sha256:d"),
        ("web:abc@sha256:d", "abc", "sha256:d"),
        ("web", None, None),
    ],
)
def test_reference_parts(reference: str, tag: str | None, found_digest: str | None) -> None:
    assert reference_parts(reference) == (tag, found_digest)


# --- the stage, over an in-memory AWS --------------------------------------------------------


@dataclass(frozen=True)
class Keeps:
    keep_task_definitions: int = 0
    keep_images: int = 0


@dataclass(frozen=True)
class StandIn:
    """The keys of an app's config that housekeeping reads."""

    name: str = APP
    cluster: str = "cluster"
    service: str = APP
    ecr_repository: str = APP
    cleanup: Keeps = Keeps()


def keeps(task_definitions: int = 0, images: int = 0) -> StandIn:
    return StandIn(cleanup=Keeps(task_definitions, images))


@dataclass
class FakeHousekeeping:
    revisions: dict[str, TaskDefinitionRevision] = field(default_factory=dict)  # ACTIVE
    inactive: dict[str, TaskDefinitionRevision] = field(default_factory=dict)
    stored: dict[str, StoredImage] = field(default_factory=dict)  # by digest
    in_flight: dict[str, str] = field(default_factory=dict)
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    refuse_delete: set[str] = field(default_factory=set)  # digests ECR will not delete
    writes: list[str] = field(default_factory=list)

    def fail(self, call: str, *errors: Exception) -> None:
        self.failures.setdefault(call, []).extend(errors)

    def _check(self, call: str) -> None:
        if self.failures.get(call):
            raise self.failures[call].pop(0)

    async def service(self, *, cluster: str, service: str) -> ServiceState:
        raise AssertionError("the stage is given the service")

    async def in_flight_task_definitions(self, *, cluster: str, service: str) -> dict[str, str]:
        self._check("in_flight")
        return dict(self.in_flight)

    async def task_definitions(self, family: str) -> list[TaskDefinitionRevision]:
        await asyncio.sleep(0)
        self._check("task_definitions")
        return [r for r in self.revisions.values() if r.family == family]

    async def task_definition(self, arn: str) -> TaskDefinitionRevision:
        self._check("task_definition")
        return {**self.inactive, **self.revisions}[arn]

    async def images(self, repository: str) -> list[StoredImage]:
        self._check("images")
        return list(self.stored.values())

    async def deregister(self, arn: str) -> None:
        self._check("deregister")
        self.writes.append(f"deregister {arn}")
        self.inactive[arn] = self.revisions.pop(arn)

    async def delete_images(self, repository: str, digests: Sequence[str]) -> list[Deleted]:
        self._check("delete_images")
        self.writes.append(f"delete {len(digests)}")
        results = []
        for d in digests:
            if d in self.refuse_delete:
                results.append(Deleted(d, "ImageReferencedByManifestList: in use"))
            else:
                del self.stored[d]
                results.append(Deleted(d))
        return results


def aws_with(
    revisions: Sequence[TaskDefinitionRevision], images: Sequence[StoredImage]
) -> FakeHousekeeping:
    return FakeHousekeeping(
        revisions={r.arn: r for r in revisions}, stored={i.digest: i for i in images}
    )


def running(live: int, *others: tuple[str, int]) -> ServiceState:
    deployments = [Deployment("ecs-svc/1", "PRIMARY", arn(live), "COMPLETED", 1, 1)]
    deployments += [
        Deployment(f"ecs-svc/{i + 2}", status, arn(n), "COMPLETED", 0, 0)
        for i, (status, n) in enumerate(others)
    ]
    return ServiceState("cluster", APP, arn(live), tuple(deployments))


def left(aws: FakeHousekeeping) -> list[int]:
    return sorted(r.revision for r in aws.revisions.values())


def images_left(aws: FakeHousekeeping) -> list[int]:
    return sorted(int(d.removeprefix("sha256:"), 16) for d in aws.stored)


async def test_rollback_history_keeps_the_running_revision_and_the_target() -> None:
    # Revisions 1..6 registered by the daemon, each naming its own image; the service was
    # rolled back to 3, and a hold still names 2 as its rollback target.
    aws = aws_with([rev(n) for n in range(1, 7)], [img(n) for n in range(1, 7)])
    with capture_logs() as logged:
        report = await clean_up(
            aws,
            app=keeps(task_definitions=2, images=2),
            service=running(3),
            protected=[arn(2)],
        )
    assert left(aws) == [2, 3, 5, 6]
    # Images named by a revision that stays stay; 1 and 4 went with their revisions.
    assert images_left(aws) == [2, 3, 5, 6]
    assert not report.failed
    assert {k.name: k.reason for k in report.kept if k.kind == "task_definition"} == {
        arn(6): KEPT_NEWEST,
        arn(5): KEPT_NEWEST,
        arn(3): "live",
        arn(2): "protected (a hold's rollback target)",
    }
    events = [e["event"] for e in logged]
    assert events.count("task_definition_deregistered") == 2
    assert events.count("image_deleted") == 2


async def test_each_service_of_a_release_keeps_its_newest_and_the_images_of_every_family() -> None:
    """web and worker, revisions 1..5 each in its own family: each family keeps its newest
    two; the worker's live revision 3 (a rolled-back worker) keeps image 3 as well, though
    the web's family no longer names it."""
    worker = "web-worker"
    revisions = [rev(n) for n in range(1, 6)] + [rev(n, family=worker) for n in range(1, 6)]
    aws = aws_with(revisions, [img(n) for n in range(1, 6)])
    worker_live = ServiceState(
        "cluster",
        worker,
        arn(3, worker),
        (Deployment("ecs-svc/9", "PRIMARY", arn(3, worker), "COMPLETED", 1, 1),),
    )
    report = await clean_up(
        aws, app=keeps(task_definitions=2, images=1), service=running(5), others=[worker_live]
    )
    assert not report.failed
    assert sorted(aws.revisions) == sorted(
        [arn(4), arn(5), arn(3, worker), arn(4, worker), arn(5, worker)]
    )
    assert images_left(aws) == [3, 4, 5]


@dataclass
class RuleTargets:
    """EventBridge as the cleanup reads it: rules and their targets, nothing written."""

    rules: dict[str, list[dict[str, Any]]]

    async def rule_targets(self, rule: str) -> list[dict[str, Any]]:
        return self.rules[rule]

    async def put_targets(self, rule: str, targets: Sequence[dict[str, Any]]) -> None:
        raise AssertionError("cleanup writes no schedule")

    async def schedule(self, *, group: str, name: str) -> dict[str, Any]:
        raise AssertionError("no schedule named")

    async def update_schedule(self, request: dict[str, Any]) -> None:
        raise AssertionError("cleanup writes no schedule")

    def update_fields(self) -> frozenset[str]:
        return frozenset()


async def test_a_revision_a_schedule_still_names_stays() -> None:
    """A nightly rule still runs revision 2 (its move was refused, say): cleanup keeping one
    revision keeps 2 beside the live 5, since a scheduled run of a deregistered revision
    fails; a rule target of another family protects nothing of this one."""
    rules = RuleTargets(
        {
            "nightly": [
                {"Id": "a", "Arn": "cluster", "EcsParameters": {"TaskDefinitionArn": arn(2)}},
                {"Id": "b", "Arn": "cluster", "EcsParameters": {"TaskDefinitionArn": arn(3, "x")}},
            ]
        }
    )
    service = running(5)
    named = await named_by_schedules_of(rules, ["rule/nightly"], [service])
    assert named == {arn(2): "named by rule/nightly"}
    aws = aws_with([rev(n) for n in range(1, 6)], [])
    await clean_up(aws, app=keeps(task_definitions=1), service=service, protected=named)
    assert left(aws) == [2, 5]


async def test_every_deployment_and_service_deployment_in_flight_stays() -> None:
    aws = aws_with([rev(n) for n in range(1, 9)], [])
    aws.in_flight = {arn(2): "source of a service deployment IN_PROGRESS"}
    service = running(8, ("ACTIVE", 4), ("INACTIVE", 3))
    await clean_up(aws, app=keeps(task_definitions=1), service=service)
    assert left(aws) == [2, 3, 4, 8]


async def test_dry_run_changes_nothing_and_says_what_would_go() -> None:
    aws = aws_with([rev(n) for n in range(1, 5)], [img(n) for n in range(1, 5)])
    with capture_logs() as logged:
        report = await clean_up(
            aws, app=keeps(task_definitions=1, images=1), service=running(4), dry_run=True
        )
    assert aws.writes == []
    assert left(aws) == [1, 2, 3, 4]
    assert sorted(r.name for r in report.removed if r.kind == "task_definition") == [
        arn(1),
        arn(2),
        arn(3),
    ]
    # The images of the revisions that would go would go too.
    assert len([r for r in report.removed if r.kind == "image"]) == 3
    assert not any(r.done for r in report.removed)
    assert {row["action"] for row in report.rows()} == {"would deregister", "would delete", "keep"}
    events = {e["event"] for e in logged}
    assert "task_definition_deregistered" not in events
    assert "image_deleted" not in events
    assert "task_definition_would_be_deregistered" in events


async def test_off_does_nothing() -> None:
    aws = aws_with([rev(n) for n in range(1, 5)], [img(n) for n in range(1, 5)])
    report = await clean_up(aws, app=keeps(), service=running(4))
    assert report == CleanupReport(app=APP, dry_run=False)
    assert aws.writes == []


async def test_a_refused_deregistration_is_reported_and_keeps_its_images() -> None:
    aws = aws_with([rev(n) for n in range(1, 6)], [img(n) for n in range(1, 6)])
    aws.fail("deregister", AwsRejected("DeregisterTaskDefinition: ClientException: no"))
    report = await clean_up(aws, app=keeps(task_definitions=1, images=1), service=running(5))
    # Revision 1 (the oldest, tried first) could not go; the others did.
    assert left(aws) == [1, 5]
    failed = [r for r in report.removed if r.error]
    assert [r.name for r in failed] == [arn(1)]
    assert report.failed
    # Revision 1 stays, so its image is still needed.
    assert images_left(aws) == [1, 5]


async def test_throttling_stops_the_deregistrations_for_this_run() -> None:
    aws = aws_with([rev(n) for n in range(1, 6)], [])
    aws.fail("deregister", AwsUnavailable("DeregisterTaskDefinition: ThrottlingException"))
    report = await clean_up(aws, app=keeps(task_definitions=1), service=running(5))
    assert left(aws) == [1, 2, 3, 4, 5]
    reasons = {k.name: k.reason for k in report.kept}
    assert reasons[arn(2)].startswith("left for the next run")


async def test_an_image_ecr_refuses_to_delete_is_reported() -> None:
    aws = aws_with([rev(3)], [img(n) for n in range(1, 4)])
    aws.refuse_delete = {digest(1)}
    report = await clean_up(aws, app=keeps(images=1), service=running(3))
    assert images_left(aws) == [1, 3]
    assert [r.detail for r in report.removed if r.error] == [sha(1)]
    assert any(row["action"] == "delete failed" for row in report.rows())


@pytest.mark.parametrize("call", ["task_definitions", "in_flight", "task_definition", "images"])
async def test_a_read_that_fails_removes_nothing_it_could_not_judge(call: str) -> None:
    aws = aws_with([rev(n) for n in range(2, 6)], [img(n) for n in range(1, 6)])
    # The live revision is INACTIVE: its images are learnt from a describe of its own.
    aws.inactive[arn(1)] = rev(1)
    aws.fail(call, AwsUnavailable(f"{call}: ServerException"))
    service = ServiceState("cluster", APP, arn(1), ())
    report = await clean_up(aws, app=keeps(task_definitions=1, images=1), service=service)
    assert report.errors and call in report.errors[0]
    assert images_left(aws) == [1, 2, 3, 4, 5]
    if call in {"task_definitions", "in_flight"}:
        assert left(aws) == [2, 3, 4, 5]


async def test_the_images_of_an_inactive_live_revision_stay() -> None:
    aws = aws_with([rev(n) for n in range(2, 5)], [img(n) for n in range(1, 5)])
    aws.inactive[arn(1)] = rev(1)
    await clean_up(aws, app=keeps(images=1), service=ServiceState("cluster", APP, arn(1), ()))
    # 2 and 3 are ACTIVE revisions that stay (task definitions are off): their images stay.
    assert images_left(aws) == [1, 2, 3, 4]


async def test_refused_service_deployments_while_nothing_moves_still_clean() -> None:
    """Judged from the deployments list instead, and the report says so (no failure)."""
    aws = aws_with([rev(n) for n in range(1, 4)], [])
    refused = "ListServiceDeployments: AccessDeniedException"
    aws.fail("in_flight", ServiceDeploymentsUnreadable(refused))
    report = await clean_up(aws, app=keeps(task_definitions=1), service=running(3))
    assert left(aws) == [3]
    assert not report.errors and not report.failed
    assert len(report.fallbacks) == 1 and refused in report.fallbacks[0]


def moving() -> ServiceState:
    """A rollout from 3 to 4 in flight, as the service's deployments list shows it."""
    return ServiceState(
        "cluster",
        APP,
        arn(4),
        (
            Deployment("ecs-svc/2", "PRIMARY", arn(4), "IN_PROGRESS", 0, 1),
            Deployment("ecs-svc/1", "ACTIVE", arn(3), "COMPLETED", 1, 1),
        ),
    )


async def test_refused_service_deployments_mid_rollout_keep_the_listed_ones() -> None:
    """As rollouts do then, every revision in the service's deployments list (the one rolled
    to and the one rolled from) is in use; the rest is judged as usual, and the report's
    rows say the fallback was used, naming the list and the refusal."""
    aws = aws_with([rev(n) for n in range(1, 6)], [])
    refused = "ListServiceDeployments: AccessDeniedException: not authorized"
    aws.fail("in_flight", ServiceDeploymentsUnreadable(refused))
    report = await clean_up(aws, app=keeps(task_definitions=1), service=moving())
    assert left(aws) == [3, 4, 5]
    assert not report.failed
    (row,) = [r for r in report.rows() if r["action"] == "fallback"]
    assert "PRIMARY web:4, ACTIVE web:3" in row["detail"] and refused in row["detail"]


async def test_an_unreadable_revision_mid_rollout_cleans_nothing() -> None:
    """Service deployments were read, but a revision one of them names could not be: it may
    run anything, so nothing is judged safe while a rollout moves."""
    aws = aws_with([rev(n) for n in range(1, 5)], [])
    aws.fail("in_flight", AwsRejected("DescribeServiceRevisions: cannot read arn:rev/9: MISSING"))
    report = await clean_up(aws, app=keeps(task_definitions=1), service=moving())
    assert left(aws) == [1, 2, 3, 4]
    assert report.errors and report.fallbacks == ()


async def test_revisions_of_another_account_are_never_touched() -> None:
    # Clients opened for the wrong account list that account's namesake family.
    elsewhere = [
        TaskDefinitionRevision(
            arn=arn(n).replace("123456789012", "210987654321"),
            family=APP,
            revision=n,
            tags={APP_TAG: APP},
        )
        for n in range(1, 5)
    ]
    aws = aws_with(elsewhere, [img(n) for n in range(1, 5)])
    report = await clean_up(aws, app=keeps(task_definitions=1, images=1), service=running(4))
    assert aws.writes == []
    assert report.errors and "account and region" in report.errors[0]


def test_what_the_memory_protects() -> None:
    memory = AppMemory(
        hold=Hold(revision=sha(9), reason="failed", config_fingerprint="f", rollback_to=arn(2)),
        attempt=Attempt(
            revision=sha(9), task_definition=arn(5), previous=arn(4), config_fingerprint="f"
        ),
    )
    assert set(protected_by(memory)) == {arn(2), arn(4), arn(5)}
    assert protected_by(AppMemory()) == {}


# --- after a rollout -------------------------------------------------------------------------


def pass_context(tmp_path: Path, **app_keys: Any) -> tuple[PassContext, FakeWorld]:
    world = FakeWorld.create(tmp_path, head=sha(7), **app_keys)
    return PassContext(world.loop._session, revision=sha(7)), world


async def test_after_a_rollout_protects_what_ran_before(tmp_path: Path) -> None:
    ctx, _ = pass_context(tmp_path, cleanup={"keep_task_definitions": 1})
    aws = aws_with([rev(n) for n in range(1, 5)], [])  # the fake service runs revision 1
    report = await after_rollout(ctx, aws, previous=arn(3))
    assert report is not None
    assert left(aws) == [1, 3, 4]


async def test_after_a_rollout_never_raises(tmp_path: Path) -> None:
    ctx, world = pass_context(tmp_path, cleanup={"keep_task_definitions": 1})
    world.ecs.fail_next("describe_service", AwsUnavailable("DescribeServices: ServerException"))
    with capture_logs() as logged:
        assert await after_rollout(ctx, aws_with([], [])) is None
    assert [e["event"] for e in logged] == ["cleanup_failed"]


async def test_after_a_rollout_with_housekeeping_off_calls_nothing(tmp_path: Path) -> None:
    ctx, world = pass_context(tmp_path)
    world.ecs.fail_next("describe_service", AssertionError("not to be called"))
    assert await after_rollout(ctx, aws_with([], [])) is None
    assert await after_rollout(ctx, None) is None


# --- the adapter, over a stub client ---------------------------------------------------------


class StubEcs:
    """Pages of ListTaskDefinitions two ARNs at a time, and the describes they lead to."""

    def __init__(self, revisions: Sequence[TaskDefinitionRevision]) -> None:
        self.revisions = {r.arn: r for r in revisions}
        self.described: list[str] = []

    async def list_task_definitions(self, **request: Any) -> dict[str, Any]:
        arns = sorted(self.revisions, key=lambda a: int(a.rpartition(":")[2]))
        # Another family that merely starts with the same name is listed too: it is dropped.
        arns.append(arn(1, family=f"{APP}-worker"))
        start = int(request.get("nextToken") or 0)
        page: dict[str, Any] = {"taskDefinitionArns": arns[start : start + 2]}
        if start + 2 < len(arns):
            page["nextToken"] = str(start + 2)
        return page

    async def describe_task_definition(self, **request: Any) -> dict[str, Any]:
        name = str(request["taskDefinition"])
        self.described.append(name)
        revision = self.revisions[name]
        return {
            "taskDefinition": {
                "taskDefinitionArn": revision.arn,
                "family": revision.family,
                "revision": revision.revision,
                "containerDefinitions": [{"name": "app", "image": i} for i in revision.images],
            },
            "tags": [{"key": k, "value": v} for k, v in revision.tags.items()],
        }


class StubEcr:
    def __init__(self, images: Sequence[StoredImage]) -> None:
        self.stored = list(images)
        self.deletes: list[int] = []

    async def describe_images(self, **request: Any) -> dict[str, Any]:
        start = int(request.get("nextToken") or 0)
        page: dict[str, Any] = {
            "imageDetails": [
                {"imageDigest": i.digest, "imageTags": list(i.tags), "imagePushedAt": i.pushed_at}
                for i in self.stored[start : start + 2]
            ]
        }
        if start + 2 < len(self.stored):
            page["nextToken"] = str(start + 2)
        return page

    async def batch_delete_image(self, **request: Any) -> dict[str, Any]:
        ids = request["imageIds"]
        self.deletes.append(len(ids))
        return {
            "imageIds": ids[1:],
            "failures": [
                {"imageId": ids[0], "failureCode": "ImageNotFound", "failureReason": "gone"},
            ],
        }


async def test_the_adapter_pages_and_describes_untagged_revisions_once() -> None:
    ecs = StubEcs([rev(1, tag=None), rev(2), rev(3), rev(4, tag=None), rev(5)])
    housekeeping = Housekeeping(ecs, StubEcr([]))
    found = await housekeeping.task_definitions(APP)
    assert [r.revision for r in found] == [1, 2, 3, 4, 5]
    assert found[1].tags == {APP_TAG: APP, "team": "x"}
    assert found[1].images == rev(2).images
    ecs.described.clear()
    await housekeeping.task_definitions(APP)
    # What carries no tag of ours never changes what it names; ours are read afresh.
    assert sorted(ecs.described) == [arn(2), arn(3), arn(5)]


async def test_the_adapter_pages_images_and_deletes_in_hundreds() -> None:
    ecr = StubEcr([img(n) for n in range(1, 6)])
    housekeeping = Housekeeping(StubEcs([]), ecr)
    assert [i.digest for i in await housekeeping.images(APP)] == [digest(n) for n in range(1, 6)]
    results = await housekeeping.delete_images(APP, [digest(n) for n in range(250)])
    assert ecr.deletes == [100, 100, 50]
    # Gone already is what was asked for.
    assert all(r.error is None for r in results)
    assert len(results) == 250
