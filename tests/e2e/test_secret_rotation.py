"""Secrets that arrive after start are scrubbed from logs too: the token of an app a reload
brings, and a webhook secret rotated in its file."""

from __future__ import annotations

from reconciler import logs
from tests.support.world import World


async def test_a_token_named_by_a_reload_and_a_rotated_webhook_secret_are_scrubbed(
    world: World,
) -> None:
    token, rotated = "tok-added-by-reload-5b1e", "rotated-webhook-secret-77c2"
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        (world.root / "token").write_text(token + "\n")
        world.app_overrides["git_token_file"] = str(world.root / "token")
        loop = daemon.supervisor.apps.loops[world.name]
        daemon.config_path.write_text(world.config_text())
        await daemon.wait_for(
            lambda s: (
                daemon.supervisor.apps.loops.get(world.name) not in (None, loop)
                and s["phase"] == "InSync"
            ),
            what="the edited app restarted",
        )
        assert token not in logs.redact(f"git said: {token}")

        (world.root / "secret").write_text(rotated + "\n")
        answer = await daemon.github_push(secret=rotated)
        assert answer.status == 202
        assert rotated not in logs.redact(f"header was {rotated}")
