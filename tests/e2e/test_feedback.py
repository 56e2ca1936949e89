"""Feedback end to end: the in-process daemon on the real stack tells a fake forge and a chat
receiver, both on 127.0.0.1, what happened to a push.

Routing is the daemon's own: the fake forge serves the app's repository over git's smart
HTTP protocol on the same host as its API (`http://127.0.0.1:<port>/acme/<app>.git` next to
`http://127.0.0.1:<port>/api/v3`), exactly as a GitHub Enterprise server does, so the app
fetches its code from the forge and `[github].api_url` routes it there. No test seam.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.sandbox.aws import SandboxAws
from tests.support.config import Table, toml_lines
from tests.support.forge import ChatReceiver, FakeForge
from tests.support.inprocess import hooks_url
from tests.support.probes import eventually
from tests.support.webhooks import signed_push
from tests.support.world import WEBHOOK_SECRET, RunningDaemon, World

pytestmark = [pytest.mark.slow]
PUBLIC = "https://cd.example.com"


@dataclass
class FeedbackWorld(World):
    """A World whose config also has `[github]`, `[gitlab]` and `[notify]` tables."""

    feedback: dict[str, Table] = field(default_factory=dict)

    def config_text(self) -> str:
        text = super().config_text()
        for name, table in self.feedback.items():
            text += "\n".join(toml_lines(f"[{name}]", table)) + "\n"
        return text

    def tell(self, forge: FakeForge, kind: str, chat: ChatReceiver, project: str) -> str:
        """Route this World's app to `forge` as `kind`, messages to `chat`; the clone URL."""
        token = self.root / f"{kind}-token"
        token.write_text(forge.token + "\n")
        urls = self.root / "apprise-urls"
        urls.write_text(chat.apprise_url() + "\n")
        api = forge.github_api_url if kind == "github" else forge.gitlab_api_url
        self.feedback = {
            kind: {"token_file": token, "api_url": api},
            "notify": {"urls_file": urls},
        }
        self.daemon_overrides["public_url"] = PUBLIC
        url = forge.serve_git(project, self.repo.remote)
        self.app_overrides["repo"] = url
        return url


@pytest.fixture
def world(
    tmp_path: Path, aws: SandboxAws, registry: str, docker_engine: str
) -> Iterator[FeedbackWorld]:
    aws.faults.clear()
    made = FeedbackWorld.create(tmp_path, aws, registry)
    assert isinstance(made, FeedbackWorld)
    yield made
    aws.faults.clear()


async def push(daemon: RunningDaemon, url: str, after: str) -> None:
    body, headers = signed_push(repo_url=url, after=after, secret=WEBHOOK_SECRET)
    hooks = f"{hooks_url(daemon.daemon)}/hooks/github"
    async with daemon.http.post(hooks, data=body, headers=headers) as answer:
        assert answer.status == 202, await answer.text()


def told_a_deploy(forge: FakeForge, sha: str) -> bool:
    """Pending then success on the commit, and one Deployment that ended in success."""
    said = forge.sequence(sha)
    statuses = [s for s in said if s.startswith("status:")]
    deployment = [s.split(":")[1] for s in said if s.startswith("deployment_status:")]
    return (
        statuses == ["status:pending", "status:success"]
        and said.count("deployment") == 1
        and said.index("deployment") > said.index("status:pending")
        and deployment in (["in_progress", "success"], ["success"])
    )


async def test_a_push_is_pending_then_success_with_a_deployment_and_a_message(
    world: FeedbackWorld,
) -> None:
    world.app_overrides.update(environment="staging", url="https://staging.example.com")
    async with FakeForge() as forge, ChatReceiver() as chat:
        url = world.tell(forge, "github", chat, f"acme/{world.name}")
        async with world.daemon() as daemon:
            first = world.first_commit
            await daemon.wait_phase("InSync", revision=first)
            await eventually(lambda: told_a_deploy(forge, first), what="the first deploy told")
            second = world.repo.commit({"app.txt": "version 2\n"}, "Say version 2\n\nBody.")
            await push(daemon, url, second)
            await daemon.wait_phase("InSync", revision=second)
            await eventually(lambda: told_a_deploy(forge, second), what="the push told")
            await eventually(lambda: len(chat.messages) == 2, what="two messages")
            feedback = daemon.daemon.feedback
            assert feedback is not None and feedback.problems() == {}
    pending = forge.answered("status", sha=second)[0]
    assert pending.body["context"] == f"reconciler/{world.name}"
    assert pending.body["target_url"] == f"{PUBLIC}/apps/{world.name}"
    created = forge.answered("deployment", sha=second)[0]
    assert created.body["environment"] == "staging" and created.body["ref"] == second
    last = forge.answered("deployment_status", sha=second)[-1]
    assert last.body["environment_url"] == "https://staging.example.com"
    assert all(r.headers["Authorization"] == f"token {forge.token}" for r in forge.requests)
    # One message per outcome: the first deploy, then the push.
    titles = [m["title"] for m in chat.messages]
    assert titles == [
        f"{world.name}: Deployed {first[:7]} in staging",
        f"{world.name}: Deployed {second[:7]} in staging",
    ]
    assert f"Commit: {second[:7]} Say version 2\n" in chat.messages[1]["message"]
    metrics = daemon.daemon.metrics.render().decode()
    assert 'reconciler_feedback_total{outcome="sent",target="github"}' in metrics


async def test_a_failing_test_shows_failure_on_gitlab_and_in_chat(
    world: FeedbackWorld, base_image: str
) -> None:
    # The World's image is FROM scratch, where no command can start, and the engine adapter
    # reports a process that cannot start as an engine error (retried), not as a failed test:
    # so this commit's image has a shell, and the test command exits 3.
    broken = world.repo.commit(
        {"Dockerfile": f"FROM {base_image}\nCOPY app.txt /app.txt\n"}, "Check harder"
    )
    world.app_overrides["test"] = {"command": ["sh", "-c", "echo the check failed >&2; exit 3"]}
    async with FakeForge() as forge, ChatReceiver() as chat:
        world.tell(forge, "gitlab", chat, f"group/e2e/{world.name}")
        async with world.daemon() as daemon:
            status = await daemon.wait_for(lambda s: s["phase"] == "Failed", what="Failed")
            assert "exited 3" in status["last_error"]
            await eventually(lambda: forge.sequence(broken)[-1:] == ["gitlab:failed"])
            await eventually(lambda: len(chat.messages) == 1, what="one message")
    assert forge.sequence(broken) == ["gitlab:pending", "gitlab:failed"]
    failed = forge.answered(sha=broken)[-1]
    assert failed.path.startswith(f"/api/v4/projects/group%2Fe2e%2F{world.name}/statuses/")
    assert failed.body["name"] == f"reconciler/{world.name}"
    assert failed.body["description"].startswith("Test failed: sh -c echo the check failed")
    message = chat.messages[0]
    assert message["title"] == f"{world.name}: Test failed {broken[:7]} in {world.name}"
    assert message["type"] == "failure"
    assert "Commit: " + broken[:7] + " Check harder" in message["message"]
    assert "the check failed" in message["message"]
    assert not forge.answered("deployment")
