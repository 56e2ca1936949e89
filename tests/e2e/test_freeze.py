"""Freeze windows on the real stack (SPEC 21): a frozen app deploys nothing until an admin
lets one release through, and that is in the audit log.

Real git, dockerd, registry and the sandbox AWS; the override goes through the CLI, as an
admin would send it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.adapters.tokens import add_token
from tests.support.cli import reconciler
from tests.support.world import World

REASON = "hotfix for INC-42"


async def test_a_freeze_holds_a_push_and_an_admin_override_deploys_it_once(
    world: World, tmp_path: Path
) -> None:
    """During a freeze a push neither builds nor deploys (phase Frozen, with reason and end);
    an operator's override is refused 403; an admin's deploys the release once, audited with
    its reason; the next push is frozen again."""
    tokens = tmp_path / "tokens.toml"
    admin = add_token(tokens, name="ada", role="admin", apps=[])
    operator = add_token(tokens, name="otto", role="operator", apps=[world.name])
    (tmp_path / "ada.token").write_text(admin)
    (tmp_path / "otto.token").write_text(operator)
    world.sections["auth"] = {"tokens_file": tokens}
    # A window starts every minute and lasts an hour: the app is frozen throughout the test.
    world.freezes = [
        {
            "apps": [world.name],
            "cron": "* * * * *",
            "duration": "1h",
            "timezone": "UTC",
            "reason": "quarter close",
        }
    ]
    async with world.daemon(token=admin) as daemon:
        second = world.repo.commit({"app.txt": "version 2\n"}, "second")
        await daemon.github_push()
        frozen = await daemon.wait_for(
            lambda s: s["phase"] == "Frozen" and s["desired"]["revision"] == second,
            what="Frozen at the pushed revision",
        )
        assert frozen["frozen"]["reason"] == "quarter close"
        assert frozen["frozen"]["until"] > frozen["last_transition"]
        assert world.updates() == 0

        def sync(token_file: str) -> list[str]:
            return [
                "sync", world.name, "--override-freeze", "--reason", REASON, "--url",
                daemon.url, "--token-file", str(tmp_path / token_file),
            ]  # fmt: skip

        refused = await reconciler(*sync("otto.token"))
        assert refused.code == 2, refused
        assert "403" in refused.stderr and "override freeze" in refused.stderr
        assert world.updates() == 0

        overridden = await reconciler(*sync("ada.token"))
        assert overridden.code == 0, overridden
        deployed = await daemon.wait_phase("InSync", revision=second)
        assert deployed["history"][0]["by"] == "ada"
        assert world.updates() == 1

        third = world.repo.commit({"app.txt": "version 3\n"}, "third")
        await daemon.github_push()
        await daemon.wait_for(
            lambda s: s["phase"] == "Frozen" and s["desired"]["revision"] == third,
            what="Frozen again at the next push",
        )
        assert world.live_image() == world.image(second)

        async with daemon.http.get(f"{daemon.url}/audit", params={"app": world.name}) as answer:
            entries = (await answer.json())["entries"]
    overrides = [e for e in entries if e["action"] == "override_freeze"]
    assert {(e["identity"], e["result"][:11], e["args"]["reason"]) for e in overrides} == {
        ("otto", "refused: 40", REASON),
        ("ada", "accepted", REASON),
    }
    assert world.updates() == 1


async def test_a_release_held_by_a_freeze_starts_when_it_ends_without_a_push(
    world: World,
) -> None:
    """A window that began this minute and ends 18 s from now: the first release waits in
    Frozen, then goes out at the window's end by itself (the loop wakes at the end, no push,
    no poll: the poll interval is an hour), once."""
    now = datetime.now(UTC)
    world.daemon_overrides["poll_interval"] = "1h"
    world.freezes = [
        {
            "apps": [world.name],
            "cron": f"{now.minute} {now.hour} * * *",
            "duration": f"{now.second + 18}s",
            "timezone": "UTC",
            "reason": "release train",
        }
    ]
    ends = now.replace(second=0, microsecond=0) + timedelta(seconds=now.second + 18)
    async with world.daemon() as daemon:
        frozen = await daemon.wait_for(lambda s: s["phase"] == "Frozen", what="Frozen")
        assert frozen["frozen"]["until"] == ends.isoformat().replace("+00:00", "Z")
        assert world.updates() == 0
        deployed = await daemon.wait_phase("InSync", revision=world.first_commit, timeout=120)
    started = datetime.fromisoformat(deployed["history"][0]["started_at"])
    assert started >= ends
    assert world.updates() == 1
