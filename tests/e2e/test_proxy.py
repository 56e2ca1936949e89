"""Behind a real reverse proxy on the same host, where every client arrives from 127.0.0.1:
nothing that reads or changes state is reachable without an identity, and nothing changes
in ECS."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from reconciler.sandbox.aws import SandboxAws
from tests.support.inprocess import hooks_url
from tests.support.nginx import nginx_in_front_of
from tests.support.world import World

READS = ["/status", "/status/{app}", "/metrics", "/audit", "/events", "/", "/apps/{app}"]
ACTIONS = ["/apps/{app}/sync", "/apps/{app}/rollback", "/apps/{app}/unpin"]
# What a client may add to pass itself off as someone: none of it is an identity.
POSING = [
    {},
    {"X-Forwarded-For": "127.0.0.1"},
    {"X-Forwarded-User": "admin"},
    {"X-Real-IP": "127.0.0.1", "X-Forwarded-For": "10.0.0.1"},
    {"Authorization": "Bearer nope"},
    {"Cookie": "reconciler_session=forged.AAAA"},
]


async def test_through_the_proxy_nothing_is_read_or_changed_without_an_identity(
    world: World, aws: SandboxAws, tmp_path: Path
) -> None:
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync", revision=world.first_commit)
        updates = aws.calls.count("UpdateService")
        with nginx_in_front_of(daemon.url, tmp_path / "nginx") as proxy:
            async with aiohttp.ClientSession() as http:
                for headers in POSING:
                    for path in READS:
                        url = proxy + path.format(app=world.name)
                        async with http.get(url, headers=headers, allow_redirects=False) as got:
                            assert got.status in (303, 401), (path, headers, got.status)
                            if got.status == 303:
                                assert got.headers["Location"].endswith("/login")
                    for path in ACTIONS:
                        url = proxy + path.format(app=world.name)
                        async with http.post(url, headers=headers) as got:
                            assert got.status == 401, (path, headers, got.status)
                async with http.get(f"{proxy}/healthz") as got:
                    assert got.status == 200  # open, and says nothing of the apps
                    assert await got.json() == {"ok": True}
                # The same operator with the admin token gets through the same proxy.
                bearer = {"Authorization": f"Bearer {daemon.admin_token}"}
                async with http.get(f"{proxy}/status", headers=bearer) as got:
                    assert got.status == 200
        # The webhook listener behind its proxy serves hooks and /healthz, nothing else.
        with nginx_in_front_of(hooks_url(daemon.daemon), tmp_path / "nginx-hooks") as hooks:
            async with aiohttp.ClientSession() as http:
                for path in ("/status", "/metrics", "/", f"/apps/{world.name}/sync"):
                    async with http.get(hooks + path) as got:
                        assert got.status == 404, path
        assert aws.calls.count("UpdateService") == updates
