"""No secret ever leaves the daemon: not in its output, its status, its errors or its metrics.

A daemon subprocess is taken through a failed build, refused webhooks and syncs, a deploy
that pushes with the ECR password, and an unreachable git remote; everything it printed (stdout
and stderr), what /status and /metrics answered and what it kept in state_dir is then
searched for each secret.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from reconciler.sandbox.aws import SandboxAws
from tests.support import webhooks
from tests.support.daemon_process import DaemonProcess
from tests.support.probes import eventually
from tests.support.world import DOCKERFILE, WEBHOOK_SECRET, World

pytestmark = [pytest.mark.slow]

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxAws]:
    # The e2e `aws` fixture is out of reach from here; moto's state is per process, so this
    # one serves the same AWS as any other sandbox of the session.
    previous = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    with SandboxAws() as aws:
        yield aws
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def ecr_password(aws: SandboxAws) -> str:
    client = boto3.client("ecr", region_name=aws.region, endpoint_url=aws.endpoint_url)
    token = client.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    return base64.b64decode(token).decode().partition(":")[2]


def signed_push(world: World, *, secret: str) -> tuple[bytes, dict[str, str]]:
    return webhooks.signed_push(repo_url=world.repo.url, after=world.repo.head(), secret=secret)


async def test_no_secret_appears_in_output_status_errors_or_metrics(
    tmp_path: Path, sandbox: SandboxAws, registry: str, docker_engine: str
) -> None:
    """Webhook secret, git token, API token and ECR password: none is ever printed or served."""
    world = World.create(tmp_path, sandbox, registry)
    git_token = f"ghp_{uuid.uuid4().hex}"
    api_token = f"api-{uuid.uuid4().hex}"
    (tmp_path / "git-token").write_text(git_token + "\n")
    (tmp_path / "api-token").write_text(api_token + "\n")
    world.app_overrides["git_token_file"] = str(tmp_path / "git-token")
    world.daemon_overrides["api_token_file"] = str(tmp_path / "api-token")
    secrets = {
        "webhook secret": WEBHOOK_SECRET,
        "git token": git_token,
        "API token": api_token,
        "ECR password": ecr_password(sandbox),
    }
    broken = world.repo.commit({"Dockerfile": "FROM scratch\nCOPY missing.txt /x\n"}, "broken")
    tokens_fetched = sandbox.calls.count("GetAuthorizationToken")

    daemon = DaemonProcess(world.write_config(), tmp_path / "daemon.log", env=AWS_ENV)
    served: list[str] = []
    try:
        await daemon.start()
        # A failed build, three times, and the hold.
        await daemon.wait_for(
            world.name,
            lambda s: s["phase"] == "Failed" and s["desired"]["revision"] == broken,
            what="Failed",
        )
        # Refused: a forged webhook, a sync without and with a wrong token.
        body, headers = signed_push(world, secret="not-" + WEBHOOK_SECRET)
        assert (await daemon.post("/hooks/github", data=body, headers=headers))[0] == 401
        assert (await daemon.post(f"/apps/{world.name}/sync", anonymous=True))[0] == 401
        wrong = {"Authorization": f"Bearer {api_token}x"}
        assert (await daemon.post(f"/apps/{world.name}/sync", headers=wrong))[0] == 401
        # Accepted: a signed webhook for a fixed commit, deployed with a push to the registry.
        fixed = world.repo.commit({"Dockerfile": DOCKERFILE}, "fixed")
        body, headers = signed_push(world, secret=WEBHOOK_SECRET)
        code, answer = await daemon.post("/hooks/github", data=body, headers=headers)
        assert (code, json.loads(answer)["nudged"]) == (202, [world.name])
        await daemon.wait_for(
            world.name,
            lambda s: s["phase"] == "InSync" and s["live"]["image"] == world.image(fixed),
            what="deployed",
        )
        # The git remote goes away: errors with the repository URL in them.
        world.repo.remote.rename(world.repo.remote.with_name("gone.git"))
        right = {"Authorization": f"Bearer {api_token}"}
        assert (await daemon.post(f"/apps/{world.name}/sync", headers=right))[0] == 202
        await daemon.wait_for(
            world.name, lambda s: world.repo.url in (s["last_error"] or ""), what="git error"
        )
        for path in ("/status", f"/status/{world.name}", "/metrics", "/healthz", "/readyz"):
            served.append((await daemon.get(path))[1])
        await eventually(lambda: "pass_failed" in daemon.text(), what="a logged failure")
    finally:
        assert daemon.stop() == 0
    assert sandbox.calls.count("GetAuthorizationToken") > tokens_fetched  # the password was used

    output = daemon.text()
    kept = [p.read_text(errors="replace") for p in (tmp_path / "state" / "apps").glob("*.json")]
    assert "build_failed" in "".join(kept) and world.repo.url in output  # there is text to search
    for what, secret in secrets.items():
        assert secret not in output, f"the {what} is in the daemon's output"
        for answer in served:
            assert secret not in answer, f"the {what} is served over HTTP"
        for state in kept:
            assert secret not in state, f"the {what} is in state_dir"
