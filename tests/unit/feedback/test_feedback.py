"""The feedback dispatcher against fake forges on 127.0.0.1, through the real gidgethub and
aiohttp clients: what each forge is told, in which order, and what happens when a forge
refuses, fails, hangs, or the daemon restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from reconciler.app.events import EventBus, Finished, PhaseChanged
from reconciler.config import Config, parse_config
from reconciler.decisions.model import Phase, Result
from reconciler.feedback import Dispatcher
from reconciler.feedback.record import COMMITS_KEPT
from tests.support.config import Table, app_table, config_text, toml_lines
from tests.support.forge import TOKEN, ChatReceiver, FakeForge
from tests.support.probes import eventually

R1 = "a1" * 20
R2 = "b2" * 20
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
B, T, P, M, D = Phase.BUILDING, Phase.TESTING, Phase.PUSHING, Phase.MIGRATING, Phase.DEPLOYING
PUBLIC = "https://cd.example.com"
DEPLOY = ["status:pending", "deployment", "deployment_status:in_progress"]
DEPLOYED = [*DEPLOY, "status:success", "deployment_status:success"]


def github_app(forge: FakeForge, name: str = "web", **settings: str) -> Table:
    return app_table(
        name,
        f"{forge.url}/acme/{name}.git",
        environment="production",
        url=f"https://{name}.example.com",
        **settings,
    )


def gitlab_app(forge: FakeForge, name: str = "api") -> Table:
    return app_table(name, f"{forge.url}/group/sub/{name}.git")


@dataclass
class Harness:
    """A config, a bus and a state_dir; dispatchers made on them share the state_dir."""

    root: Path
    config: Config
    bus: EventBus = field(default_factory=EventBus)
    phase: dict[str, Phase] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        root: Path,
        *,
        apps: list[Table],
        github: FakeForge | None = None,
        gitlab: FakeForge | None = None,
        chat: list[str] | None = None,
        events: tuple[str, ...] | None = None,
    ) -> Harness:
        text = config_text(daemon={"state_dir": root / "state", "public_url": PUBLIC}, apps=apps)
        sections: dict[str, Table] = {}
        for name, forge in (("github", github), ("gitlab", gitlab)):
            if forge is not None:
                token = root / f"{name}-token"
                token.write_text(f"{forge.token}\n")
                api = forge.github_api_url if name == "github" else forge.gitlab_api_url
                sections[name] = {"token_file": token, "api_url": api}
        if chat is not None:
            urls = root / "apprise-urls"
            urls.write_text("# where deploys are announced\n" + "\n".join(chat) + "\n")
            sections["notify"] = {"urls_file": urls}
            if events is not None:
                sections["notify"] = {"urls_file": urls, "events": list(events)}
        for name, table in sections.items():
            text += "\n".join(toml_lines(f"[{name}]", table)) + "\n"
        return cls(root=root, config=parse_config(text))

    def dispatcher(self, **options: float) -> Dispatcher:
        return Dispatcher(
            config=lambda: self.config,
            bus=self.bus,
            registry=CollectorRegistry(),
            state_dir=self.root / "state",
            retry_base=options.pop("retry_base", 0.01),
            retry_cap=options.pop("retry_cap", 0.05),
            request_timeout=options.pop("request_timeout", 5.0),
            chat_timeout=options.pop("chat_timeout", 5.0),
        )

    def phases(self, app: str, revision: str, *phases: Phase) -> None:
        for phase in phases:
            previous = self.phase.get(app, Phase.PENDING)
            self.bus.publish(
                PhaseChanged(app=app, phase=phase, previous=previous, revision=revision)
            )
            self.phase[app] = phase

    def finished(self, app: str, revision: str, result: Result, error: str | None = None) -> None:
        self.bus.publish(
            Finished(
                app=app,
                revision=revision,
                result=result,
                started_at=T0,
                finished_at=T0 + timedelta(seconds=65),
                error=error,
            )
        )


@asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await dispatcher.close()


def count(dispatcher: Dispatcher, target: str, outcome: str) -> float:
    """A sample of `reconciler_feedback_total`."""
    for family in dispatcher.sent.collect():
        for sample in family.samples:
            if sample.name == "reconciler_feedback_total" and sample.labels == {
                "target": target,
                "outcome": outcome,
            }:
                return float(sample.value)
    return 0.0


async def idle(dispatcher: Dispatcher) -> None:
    await eventually(lambda: not any(dispatcher.pending().values()), what="lanes idle")


# The sequences ---------------------------------------------------------------------------


async def test_a_deploy_on_github_is_pending_a_deployment_in_progress_then_success(
    tmp_path: Path,
) -> None:
    async with FakeForge() as forge:
        harness = Harness.make(tmp_path, apps=[github_app(forge)], github=forge)
        async with running(harness.dispatcher()):
            harness.phases("web", R1, B, T, P)
            await eventually(lambda: forge.sequence(R1) == ["status:pending"])
            harness.phases("web", R1, D)
            await eventually(lambda: forge.sequence(R1) == DEPLOY)
            harness.finished("web", R1, Result.DEPLOYED)
            harness.phases("web", R1, Phase.IN_SYNC)
            await eventually(lambda: forge.sequence(R1) == DEPLOYED)
    assert len(forge.requests) == 5
    pending, created, progress, success, live = forge.requests
    assert pending.path == f"/api/v3/repos/acme/web/statuses/{R1}"
    assert pending.headers["Authorization"] == f"token {TOKEN}"
    assert pending.body == {
        "state": "pending",
        "target_url": f"{PUBLIC}/apps/web",
        "description": "Deploying to production",
        "context": "reconciler/web",
    }
    assert created.path == "/api/v3/repos/acme/web/deployments"
    assert created.body == {
        "ref": R1,
        "environment": "production",
        "auto_merge": False,
        "required_contexts": [],
        "transient_environment": False,
        "description": "Rolling out to production",
    }
    deployment = forge.answered("deployment")[0]
    assert progress.path.endswith("/statuses") and progress.body["state"] == "in_progress"
    assert progress.body["log_url"] == f"{PUBLIC}/apps/web"
    assert progress.body["environment_url"] == "https://web.example.com"
    assert forge.deployment_sha(int(progress.path.split("/")[-2])) == R1
    assert success.body["state"] == "success" and success.body["description"] == (
        "Live in production"
    )
    assert live.path == progress.path and live.body["state"] == "success"
    assert deployment.body["ref"] == R1


async def test_a_failed_test_is_pending_then_failure_without_a_deployment(tmp_path: Path) -> None:
    # A test runs before anything is pushed: nothing was deployed, so no Deployment exists.
    async with FakeForge() as forge:
        harness = Harness.make(tmp_path, apps=[github_app(forge)], github=forge)
        async with running(harness.dispatcher()) as dispatcher:
            harness.phases("web", R1, B, T)
            await eventually(lambda: forge.sequence(R1) == ["status:pending"])
            harness.finished("web", R1, Result.TEST_FAILED, "test failed: false exited 1\nboom")
            harness.phases("web", R1, Phase.FAILED)
            await eventually(lambda: len(forge.sequence(R1)) == 2)
            await idle(dispatcher)
    assert forge.sequence(R1) == ["status:pending", "status:failure"]
    assert forge.requests[-1].body["description"] == "Test failed: false exited 1"


async def test_a_failed_rollout_and_a_rollback_fail_the_status_and_the_deployment(
    tmp_path: Path,
) -> None:
    async with FakeForge() as forge:
        harness = Harness.make(tmp_path, apps=[github_app(forge)], github=forge)

        async def fails(revision: str, result: Result) -> None:
            harness.phases("web", revision, B, P, D)
            await eventually(lambda: forge.sequence(revision) == DEPLOY)
            harness.finished("web", revision, result, "circuit breaker: tasks failed")
            harness.phases("web", revision, Phase.FAILED)
            await eventually(lambda: len(forge.sequence(revision)) == 5)

        async with running(harness.dispatcher()):
            await fails(R1, Result.FAILED)
            await fails(R2, Result.ROLLED_BACK)
    for revision, label in ((R1, "Rollout failed"), (R2, "Rolled back")):
        assert forge.sequence(revision) == [*DEPLOY, "status:failure", "deployment_status:failure"]
        said = [r.body["description"] for r in forge.answered(sha=revision)[-2:]]
        assert said == [f"{label}: circuit breaker: tasks failed"] * 2


async def test_a_deploy_on_gitlab_is_pending_running_success(tmp_path: Path) -> None:
    async with FakeForge() as forge:
        harness = Harness.make(tmp_path, apps=[gitlab_app(forge)], gitlab=forge)
        async with running(harness.dispatcher()):
            harness.phases("api", R1, B, P)
            await eventually(lambda: forge.sequence(R1) == ["gitlab:pending"])
            harness.phases("api", R1, D)
            await eventually(lambda: forge.sequence(R1) == ["gitlab:pending", "gitlab:running"])
            harness.finished("api", R1, Result.DEPLOYED)
            await eventually(lambda: len(forge.sequence(R1)) == 3)
            harness.phases("api", R2, B, T)
            harness.finished("api", R2, Result.TEST_FAILED, "test failed: exit 1")
            harness.phases("api", R2, Phase.FAILED)
            await eventually(lambda: forge.sequence(R2) == ["gitlab:failed"])
    assert forge.sequence(R1) == ["gitlab:pending", "gitlab:running", "gitlab:success"]
    first = forge.requests[0]
    assert first.path == f"/api/v4/projects/group%2Fsub%2Fapi/statuses/{R1}"
    assert first.headers["PRIVATE-TOKEN"] == TOKEN
    assert first.body == {
        "state": "pending",
        "name": "reconciler/api",
        "target_url": f"{PUBLIC}/apps/api",
        "description": "Deploying to api",
        "ref": "main",
    }
    # Coalesced: the failure was the newest state by the time R2 was sent.
    assert forge.requests[-1].body["description"] == "Test failed: exit 1"


# Refusals, outages, hangs -----------------------------------------------------------------


async def test_a_refused_token_is_not_retried(tmp_path: Path) -> None:
    async with FakeForge() as forge:
        forge.fail(401)
        harness = Harness.make(tmp_path, apps=[github_app(forge)], github=forge)
        async with running(harness.dispatcher()) as dispatcher:
            harness.phases("web", R1, B)
            await eventually(lambda: count(dispatcher, "github", "rejected") == 1)
            await idle(dispatcher)
            assert len(forge.requests) == 1
            problem = dispatcher.problems()["github acme/web"]
            assert "401" in problem and "token" in problem
            # The next state of the commit is a new item: one more request, no more.
            harness.phases("web", R1, D)
            await eventually(lambda: count(dispatcher, "github", "rejected") == 2)
            await idle(dispatcher)
            assert len(forge.requests) == 2
            assert count(dispatcher, "github", "retried") == 0
            # Once the token is right again, the newest state arrives.
            forge.heal()
            harness.finished("web", R1, Result.DEPLOYED)
            await eventually(
                lambda: (
                    forge.sequence(R1)
                    == ["status:success", "deployment", "deployment_status:success"]
                )
            )
            await idle(dispatcher)
            assert "github acme/web" not in dispatcher.problems()


async def test_an_outage_is_retried_and_only_the_newest_state_arrives(tmp_path: Path) -> None:
    async with FakeForge() as forge:
        forge.fail(500)
        harness = Harness.make(tmp_path, apps=[github_app(forge)], github=forge)
        async with running(harness.dispatcher()) as dispatcher:
            harness.phases("web", R1, B)
            await eventually(lambda: count(dispatcher, "github", "retried") >= 2)
            harness.phases("web", R1, D)
            harness.finished("web", R1, Result.DEPLOYED)
            harness.phases("web", R1, Phase.IN_SYNC)
            harness.phases("web", R2, B)
            await eventually(lambda: count(dispatcher, "github", "retried") >= 6)
            assert "retrying since" in dispatcher.problems()["github"]
            during = len(forge.requests)
            assert all(r.status == 500 for r in forge.requests)
            # One request per try, whatever is waiting: the retries are the target's.
            assert during <= count(dispatcher, "github", "retried") + 1
            forge.heal()
            await eventually(lambda: len(forge.answered()) == 4)
            await idle(dispatcher)
            assert "github" not in dispatcher.problems()
    assert forge.sequence(R1) == ["status:success", "deployment", "deployment_status:success"]
    assert forge.sequence(R2) == ["status:pending"]
    assert len(forge.requests) == during + 4


async def test_a_long_outage_keeps_a_bounded_record(tmp_path: Path) -> None:
    revisions = [f"{n:040x}" for n in range(COMMITS_KEPT + 5)]
    async with FakeForge() as forge:
        forge.fail(503)
        harness = Harness.make(tmp_path, apps=[github_app(forge)], github=forge)
        async with running(harness.dispatcher(retry_base=0.05, retry_cap=0.1)) as dispatcher:
            for revision in revisions:
                harness.phases("web", revision, B)
            await eventually(lambda: count(dispatcher, "github", "dropped") == 5)
            assert dispatcher.pending()["github"] <= COMMITS_KEPT
            forge.heal()
            await eventually(lambda: len(forge.answered()) == COMMITS_KEPT)
            await idle(dispatcher)
    told = {r.path.rsplit("/", 1)[-1] for r in forge.answered()}
    assert told == set(revisions[5:])


async def test_a_hanging_forge_delays_nothing_else(tmp_path: Path) -> None:
    async with FakeForge() as slow, FakeForge() as gitlab, ChatReceiver() as chat:
        slow.hang()
        harness = Harness.make(
            tmp_path,
            apps=[github_app(slow), gitlab_app(gitlab)],
            github=slow,
            gitlab=gitlab,
            chat=[chat.apprise_url()],
        )
        dispatcher = harness.dispatcher(request_timeout=120.0)
        async with running(dispatcher):
            harness.phases("web", R1, D)
            await eventually(lambda: slow.hanging == 1)
            # Publishing never waits, however much piles up behind the hanging forge.
            for _ in range(3000):
                harness.phases("web", R1, P, D)
            harness.finished("web", R1, Result.DEPLOYED)
            harness.phases("api", R2, B)
            await eventually(lambda: gitlab.sequence(R2) == ["gitlab:pending"])
            harness.phases("api", R2, D)
            harness.finished("api", R2, Result.DEPLOYED)
            await eventually(lambda: gitlab.sequence(R2)[-1:] == ["gitlab:success"])
            await eventually(lambda: len(chat.messages) == 2)
            assert slow.hanging == 1 and slow.answered() == []
        # close() gave up on the hanging request within its grace and kept what is owed.
        record = (tmp_path / "state" / "feedback" / "web.json").read_text()
        assert '"status_sent": null' in record
    titles = sorted(m["title"] for m in chat.messages)
    assert titles == [f"api: Deployed {R2[:7]} in api", f"web: Deployed {R1[:7]} in production"]


# Restarts ------------------------------------------------------------------------------------


async def test_a_restart_repeats_nothing(tmp_path: Path) -> None:
    async with FakeForge() as forge:
        harness = Harness.make(tmp_path, apps=[github_app(forge)], github=forge)
        async with running(harness.dispatcher()):
            harness.phases("web", R1, B, P, D)
            await eventually(lambda: forge.sequence(R1) == DEPLOY)
        # A new daemon resumes watching the rollout, then sees it succeed.
        harness.phase.clear()
        async with running(harness.dispatcher()):
            harness.phases("web", R1, D)
            harness.finished("web", R1, Result.DEPLOYED)
            harness.phases("web", R1, Phase.IN_SYNC)
            await eventually(lambda: len(forge.sequence(R1)) == 5)
        assert forge.sequence(R1) == DEPLOYED
        deployments = {r.path for r in forge.answered("deployment_status")}
        assert len(deployments) == 1, "the same deployment got both statuses"
        # The same outcome heard again (by a third daemon) is not said again.
        async with running(harness.dispatcher()):
            harness.finished("web", R1, Result.DEPLOYED)
        assert len(forge.requests) == 5


async def test_what_a_down_forge_missed_arrives_after_a_restart(tmp_path: Path) -> None:
    async with FakeForge() as forge:
        forge.fail(502)
        harness = Harness.make(tmp_path, apps=[github_app(forge)], github=forge)
        async with running(harness.dispatcher()):
            harness.phases("web", R1, D)
            harness.finished("web", R1, Result.DEPLOYED)
            await eventually(lambda: len(forge.requests) >= 2)
        forge.heal()
        async with running(harness.dispatcher()) as dispatcher:
            await eventually(lambda: len(forge.answered()) == 3)
            await idle(dispatcher)
    assert forge.sequence(R1) == ["status:success", "deployment", "deployment_status:success"]


async def test_a_damaged_record_is_set_aside_and_treated_as_empty(tmp_path: Path) -> None:
    records = tmp_path / "state" / "feedback"
    records.mkdir(parents=True)
    (records / "web.json").write_text('{"version": 1, "commits": [{"sha": ')
    async with FakeForge() as forge:
        harness = Harness.make(tmp_path, apps=[github_app(forge)], github=forge)
        with capture_logs() as logs:
            async with running(harness.dispatcher()):
                harness.phases("web", R1, B)
                await eventually(lambda: forge.sequence(R1) == ["status:pending"])
    assert any(e["event"] == "feedback_record_damaged" for e in logs)
    assert (records / "web.json.corrupt").exists()
    assert R1 in (records / "web.json").read_text()


# Tokens --------------------------------------------------------------------------------------


async def test_tokens_are_read_per_use_and_never_logged(tmp_path: Path) -> None:
    async with FakeForge() as forge:
        harness = Harness.make(tmp_path, apps=[github_app(forge)], github=forge)
        with capture_logs() as logs:
            async with running(harness.dispatcher()) as dispatcher:
                harness.phases("web", R1, B)
                await eventually(lambda: forge.sequence(R1) == ["status:pending"])
                forge.token = "rotated-token-9876543210"
                (tmp_path / "github-token").write_text(" rotated-token-9876543210 \n")
                harness.finished("web", R1, Result.TEST_FAILED, "test failed")
                harness.phases("web", R1, Phase.FAILED)
                await eventually(lambda: len(forge.answered()) == 2)
                (tmp_path / "github-token").write_text("")
                harness.phases("web", R2, B)
                await eventually(lambda: "github acme/web" in dispatcher.problems())
    assert forge.requests[1].headers["Authorization"] == "token rotated-token-9876543210"
    assert "empty" in dispatcher.problems()["github acme/web"]
    for secret in (TOKEN, "rotated-token-9876543210"):
        assert all(secret not in repr(event) for event in logs)
        assert all(secret not in problem for problem in dispatcher.problems().values())


async def test_apps_without_a_forge_or_chat_leave_no_trace(tmp_path: Path) -> None:
    harness = Harness.make(tmp_path, apps=[app_table("web", "file:///srv/git/web.git")])
    async with running(harness.dispatcher()) as dispatcher:
        harness.phases("web", R1, B, D)
        harness.finished("web", R1, Result.DEPLOYED)
        await asyncio.sleep(0)
    assert not (tmp_path / "state" / "feedback").exists()
    assert dispatcher.problems() == {}


async def test_a_record_taken_over_with_the_lease_repeats_nothing_and_sends_what_was_owed(
    tmp_path: Path,
) -> None:
    """Two daemons of a cluster, each with its own state_dir: the first mirrors its record,
    the second adopts it when it takes the app over."""
    async with FakeForge() as forge:
        for host in ("a", "b"):
            (tmp_path / host).mkdir()
        first = Harness.make(tmp_path / "a", apps=[github_app(forge)], github=forge)
        second = Harness.make(tmp_path / "b", apps=[github_app(forge)], github=forge)
        mirrored: dict[str, str] = {}
        owner = first.dispatcher()
        owner.mirror_records(mirrored.__setitem__)
        async with running(owner):
            first.phases("web", R1, B, P, D)
            await eventually(lambda: forge.sequence(R1) == DEPLOY)
            await idle(owner)
        # The owner dies mid-rollout; the next one awaits the rollout and sees it succeed.
        async with running(second.dispatcher()) as successor:
            successor.adopt_record("web", mirrored["web"])
            second.phases("web", R1, D)
            second.finished("web", R1, Result.DEPLOYED)
            second.phases("web", R1, Phase.IN_SYNC)
            await eventually(lambda: len(forge.sequence(R1)) == 5)
            await idle(successor)
        assert forge.sequence(R1) == DEPLOYED
        assert len({r.path for r in forge.answered("deployment_status")}) == 1
        said = len(forge.requests)

        # What the first owner could not deliver, the next one sends.
        forge.fail(502)
        owner = first.dispatcher()
        owner.mirror_records(mirrored.__setitem__)
        async with running(owner):
            first.phases("web", R2, D)
            first.finished("web", R2, Result.DEPLOYED)
            await eventually(lambda: len(forge.requests) > said)
        forge.heal()
        async with running(second.dispatcher()) as successor:
            successor.adopt_record("web", mirrored["web"])
            await eventually(lambda: len(forge.sequence(R2)) == 3)
            await idle(successor)
        assert forge.sequence(R2) == ["status:success", "deployment", "deployment_status:success"]
