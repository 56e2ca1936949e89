"""Build secrets through the whole daemon: a secret read from SSM (on the sandbox) reaches the
Dockerfile's RUN step that mounts it, and nowhere else, even when that step prints it on
purpose; an engine on the classic builder holds the app with one line saying why."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from pathlib import Path

import boto3
import pytest

from tests.support import webhooks
from tests.support.daemon_process import DaemonProcess
from tests.support.world import WEBHOOK_SECRET, World

pytestmark = [pytest.mark.slow]

PRINTS = (
    "RUN --mount=type=secret,id=token "
    'echo "token: $(cat /run/secrets/token)"; base64 /run/secrets/token'
)


def with_ssm_secret(world: World) -> bytes:
    """A SecureString parameter the app reads as build secret `token`; its value."""
    value = f"e2e-build-secret-{uuid.uuid4().hex}"
    name = f"/{world.name}/npm-token"
    ssm = boto3.client("ssm", region_name=world.aws.region, endpoint_url=world.aws.endpoint_url)
    ssm.put_parameter(Name=name, Value=value, Type="SecureString")
    world.app_overrides["build_secrets"] = {"token": {"ssm": name}}
    return value.encode()


def state_files(root: Path) -> list[bytes]:
    """Every file the daemon keeps in state_dir (app state, audit, git mirrors, tokens)."""
    return [path.read_bytes() for path in root.rglob("*") if path.is_file()]


async def test_a_printed_secret_is_in_no_log_status_history_page_metric_or_state_file(
    world: World, base_image: str, tmp_path: Path
) -> None:
    """The first commit prints the secret and fails; the second checks it arrived (by its
    hash), prints it again and deploys. Everything the daemon printed, served or kept is
    then searched for the value and its base64 form."""
    value = with_ssm_secret(world)
    world.sections["build"] = {"builder": "buildkit", "network": "none"}
    leaky = world.repo.commit(
        {"Dockerfile": f"FROM {base_image}\nCOPY app.txt /app.txt\n{PRINTS}; exit 3\n"},
        "prints the secret and fails",
    )
    reads = world.aws.calls.count("GetParameter")
    daemon = DaemonProcess(world.write_config(), tmp_path / "daemon.log")
    served: list[str] = []
    try:
        await daemon.start()
        failed = await daemon.wait_for(
            world.name,
            lambda s: any(h["revision"] == leaky for h in s["history"]),
            what="the failed build in history",
        )
        digest = hashlib.sha256(value).hexdigest()
        fixed = world.repo.commit(
            {
                "Dockerfile": f"FROM {base_image}\nCOPY app.txt /app.txt\n"
                "RUN --mount=type=secret,id=token "
                f'test "$(sha256sum < /run/secrets/token | cut -d" " -f1)" = "{digest}"\n'
                f"{PRINTS}\n"
            },
            "checks the secret, prints it, and builds",
        )
        body, headers = webhooks.signed_push(
            repo_url=world.repo.url, after=fixed, secret=WEBHOOK_SECRET
        )
        assert (await daemon.post("/hooks/github", data=body, headers=headers))[0] == 202
        await daemon.wait_for(
            world.name,
            lambda s: s["phase"] == "InSync" and s["live"]["image"] == world.image(fixed),
            what="the fixed commit deployed",
        )
        for path in ("/status", f"/status/{world.name}", "/metrics", "/", f"/apps/{world.name}"):
            code, answer = await daemon.get(path)
            assert code == 200, (path, answer)
            served.append(answer)
    finally:
        assert daemon.stop() == 0

    assert world.aws.calls.count("GetParameter") >= reads + 2  # read for each build
    history = failed["history"][0]
    assert history["result"] == "build_failed"
    assert "token: ***" in history["error"]  # the printed line was there, and scrubbed
    forms = {"value": value, "base64": base64.b64encode(value)}
    output = daemon.output.read_bytes()
    kept = state_files(world.root / "state")
    assert kept and json.loads(served[1])["history"]
    for form, text in forms.items():
        assert text not in output, f"the secret's {form} is in the daemon's output"
        for answer in served:
            assert text.decode() not in answer, f"the secret's {form} is served over HTTP"
        for state in kept:
            assert text not in state, f"the secret's {form} is in state_dir"


async def test_an_app_with_build_secrets_on_the_classic_builder_is_held_with_one_line(
    world: World, base_image: str
) -> None:
    with_ssm_secret(world)
    world.sections["build"] = {"builder": "classic", "network": "none"}
    world.repo.commit({"Dockerfile": f"FROM {base_image}\n{PRINTS}\n"}, "uses a secret")
    async with world.daemon() as daemon:
        status = await daemon.wait_for(
            lambda s: bool(s["last_error"]) and s["phase"] != "Building",
            what="the refusal",
        )
    assert status["last_error"] == (
        f"app {world.name}: build_secrets (token) need BuildKit, and builds use the classic"
        ' builder ([build].builder = "classic")'
    )
    assert status["phase"] != "InSync"
    assert world.updates() == 0
