"""Chat and mail through the real Apprise code path: `json://127.0.0.1:<port>/...` at a local
receiver. One message per outcome, what it says, and how a failing service is retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import apprise
import pytest

from reconciler.adapters.git import SUBJECT_LIMIT, GitMirrors, GitSource
from reconciler.decisions.model import Phase, Result
from reconciler.errors import GitRevisionNotFound
from reconciler.feedback import chat
from reconciler.feedback.translate import Notice
from tests.support.config import app_table
from tests.support.fakes import FakeGit
from tests.support.forge import ChatReceiver, FakeForge
from tests.support.gitrepo import GitRepo
from tests.support.net import free_port
from tests.support.probes import eventually
from tests.unit.feedback.test_feedback import (
    PUBLIC,
    R1,
    R2,
    Harness,
    count,
    github_app,
    idle,
    running,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
D = Phase.DEPLOYING


class SubjectGit(FakeGit):
    """A git port whose commits have real-looking subjects."""

    def __init__(self) -> None:
        super().__init__(R1)
        self.asked: list[str] = []

    async def commit_subject(self, source: GitSource, commit: str) -> str:
        self.asked.append(commit)
        return f"Fix the login redirect ({commit[:4]})"


def test_a_message_says_what_happened_where_and_why() -> None:
    notice = Notice(
        app="web",
        revision=R1,
        outcome="rolled_back",
        started_at=T0,
        finished_at=T0 + timedelta(minutes=3, seconds=5),
        error="deployment failed: circuit breaker\n" + "\n".join(f"line {n}" for n in range(9)),
    )
    message = chat.render(
        notice, environment="production", subject="Bump the pool", dashboard=f"{PUBLIC}/apps/web"
    )
    assert message.title == f"web: Rolled back {R1[:7]} in production"
    assert message.kind is apprise.NotifyType.WARNING
    assert message.body.splitlines() == [
        "App: web",
        "Environment: production",
        f"Commit: {R1[:7]} Bump the pool",
        "Outcome: rolled_back",
        "Duration: 3m 05s",
        "Reason: deployment failed: circuit breaker",
        "  line 0",
        "  line 1",
        "  line 2",
        "  line 3",
        f"Dashboard: {PUBLIC}/apps/web",
    ]
    assert chat.duration(42) == "42s" and chat.duration(3725) == "1h 02m"


async def test_one_message_per_outcome_through_apprise(tmp_path: Path) -> None:
    async with ChatReceiver() as receiver:
        harness = Harness.make(
            tmp_path,
            apps=[app_table("web", "https://example.invalid/acme/web.git", environment="prod")],
            chat=[receiver.apprise_url("hooks/deploys")],
        )
        dispatcher = harness.dispatcher()
        git = SubjectGit()
        dispatcher.git = git
        async with running(dispatcher):
            harness.phases("web", R1, D)
            harness.finished("web", R1, Result.DEPLOYED)
            harness.finished("web", R1, Result.DEPLOYED)  # heard twice, said once
            harness.phases("web", R2, Phase.BUILDING, Phase.TESTING)
            harness.finished("web", R2, Result.TEST_FAILED, "test failed: pytest exited 1\nE  x")
            harness.phases("web", R2, Phase.FAILED)
            harness.finished("web", R2, Result.SUPERSEDED, "superseded")  # not an event to tell
            await eventually(lambda: len(receiver.messages) == 2)
            await idle(dispatcher)
        assert count(dispatcher, "chat", "sent") == 2
    deployed, failed = receiver.messages
    assert receiver.paths == ["/hooks/deploys"] * 2
    assert deployed["title"] == f"web: Deployed {R1[:7]} in prod"
    assert deployed["type"] == "success"
    body = deployed["message"]
    assert f"Commit: {R1[:7]} Fix the login redirect ({R1[:4]})" in body
    assert "Outcome: deployed" in body and "Duration: 1m 05s" in body
    assert f"Dashboard: {PUBLIC}/apps/web" in body
    assert "Reason" not in body
    assert failed["title"] == f"web: Test failed {R2[:7]} in prod"
    assert failed["type"] == "failure"
    assert "Reason: test failed: pytest exited 1\n  E  x" in failed["message"]
    assert git.asked == [R1, R2]


async def test_a_release_waiting_for_approval_is_announced_once_with_its_page(
    tmp_path: Path,
) -> None:
    """AwaitingApproval asks the channel once per attempt (a phase heard again says
    nothing new), with the page where it is approved; the rejection that ends it is told
    as a failure."""
    async with ChatReceiver() as receiver:
        harness = Harness.make(
            tmp_path,
            apps=[app_table("web", "https://example.invalid/acme/web.git", environment="prod")],
            chat=[receiver.apprise_url()],
        )
        async with running(harness.dispatcher()) as dispatcher:
            harness.phases("web", R1, Phase.BUILDING, Phase.PUSHING, Phase.AWAITING_APPROVAL)
            harness.phases("web", R1, Phase.DEPLOYING, Phase.AWAITING_APPROVAL)
            harness.finished("web", R1, Result.REJECTED, "rejected by bob: not today")
            harness.phases("web", R1, Phase.FAILED)
            await eventually(lambda: len(receiver.messages) == 2)
            await idle(dispatcher)
    asked, rejected = receiver.messages
    assert asked["title"] == f"web: Approval requested {R1[:7]} in prod"
    assert asked["type"] == "info"
    assert asked["message"].splitlines()[-1] == f"Approve or reject it: {PUBLIC}/apps/web"
    assert "Duration" not in asked["message"]
    assert rejected["title"] == f"web: Rejected {R1[:7]} in prod"
    assert rejected["type"] == "failure"
    assert "Reason: rejected by bob: not today" in rejected["message"]


async def test_only_the_configured_events_are_told(tmp_path: Path) -> None:
    async with ChatReceiver() as receiver:
        harness = Harness.make(
            tmp_path,
            apps=[app_table("web", "https://example.invalid/acme/web.git")],
            chat=[receiver.apprise_url()],
            events=("failed", "rollback_failed"),
        )
        async with running(harness.dispatcher()) as dispatcher:
            harness.finished("web", R1, Result.DEPLOYED)
            harness.finished("web", R2, Result.FAILED, "rollout failed")
            await eventually(lambda: len(receiver.messages) == 1)
            await idle(dispatcher)
    assert receiver.messages[0]["title"].startswith("web: Rollout failed")


async def test_a_failing_service_is_retried_until_it_takes_the_message(tmp_path: Path) -> None:
    async with ChatReceiver() as receiver:
        receiver.fault = 500
        harness = Harness.make(
            tmp_path,
            apps=[app_table("web", "https://example.invalid/acme/web.git")],
            chat=[receiver.apprise_url()],
        )
        async with running(harness.dispatcher()) as dispatcher:
            harness.finished("web", R1, Result.DEPLOYED)
            await eventually(lambda: count(dispatcher, "chat", "retried") >= 2)
            assert "URL 1 (json://)" in " ".join(dispatcher.problems())
            receiver.fault = None
            await eventually(lambda: len(receiver.messages) == 1)
            await idle(dispatcher)
            assert dispatcher.problems() == {}


async def test_each_url_is_its_own_delivery(tmp_path: Path) -> None:
    closed = f"json://127.0.0.1:{free_port()}/nobody"
    async with ChatReceiver() as receiver:
        harness = Harness.make(
            tmp_path,
            apps=[app_table("web", "https://example.invalid/acme/web.git")],
            chat=[receiver.apprise_url(), closed, "nosuchservice://whatever"],
        )
        async with running(harness.dispatcher()) as dispatcher:
            harness.finished("web", R1, Result.DEPLOYED)
            await eventually(lambda: count(dispatcher, "chat", "dropped") == 1)
            await idle(dispatcher)
            problems = dispatcher.problems()
        # The reachable URL got the message once, however often the others were retried.
        assert len(receiver.messages) == 1
        assert count(dispatcher, "chat", "retried") >= 2
        assert "URL 2 (json://)" in " ".join(problems)
        assert "not a URL Apprise knows" in problems["chat URL 3 (nosuchservice://)"]
        assert "chat dropped" in problems


async def test_chat_and_forge_together(tmp_path: Path) -> None:
    async with FakeForge() as forge, ChatReceiver() as receiver:
        harness = Harness.make(
            tmp_path, apps=[github_app(forge)], github=forge, chat=[receiver.apprise_url()]
        )
        async with running(harness.dispatcher()) as dispatcher:
            harness.phases("web", R1, D)
            harness.finished("web", R1, Result.DEPLOYED)
            await eventually(lambda: len(receiver.messages) == 1 and len(forge.answered()) == 3)
            await idle(dispatcher)
    assert "Environment: production" in receiver.messages[0]["message"]


# The commit subject, from the mirror ------------------------------------------------------


async def test_the_subject_is_the_first_line_cleaned(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    plain = repo.commit({"a": "1"}, "Add the thing\n\nWith a body.")
    nasty = repo.commit({"a": "2"}, "\x1b[31mred\x1b[0m alert\x07 " + "x" * 300)
    mirrors = GitMirrors(tmp_path / "state")
    source = GitSource(url=repo.url, branch="main")
    try:
        assert await mirrors.resolve(source) == nasty
        assert await mirrors.commit_subject(source, plain) == "Add the thing"
        subject = await mirrors.commit_subject(source, nasty)
        assert subject.startswith("[31mred[0m alert ")
        assert len(subject) == SUBJECT_LIMIT and subject.endswith("\u2026")
        with pytest.raises(GitRevisionNotFound):
            await mirrors.commit_subject(source, "f" * 40)
    finally:
        mirrors.close()
