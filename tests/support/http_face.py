"""The daemon's HTTP face on a test client: a real Supervisor whose app loops are stand-ins.

    async with serve(tmp_path) as face:
        status, body = await face.github(fixture("github/push-with-new-branch.payload.json"))
        assert face.nudged() == [...]

The config, app matching, status and metrics are the daemon's own; each app's loop is a
FakeLoop that counts nudges and syncs. `ownership` says which apps this daemon runs (all of
them by default, as a daemon without a lease table); only those get a loop. A request may
carry `X-Test-Peer: <address>` to play a client on another host (the socket peer here is
always loopback).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from reconciler.adapters.git import GitMirrors
from reconciler.adapters.tokens import add_token
from reconciler.api.admin import build_admin_app
from reconciler.api.hooks import build_webhook_app
from reconciler.app.events import EventBus
from reconciler.app.state import FileStateStore
from reconciler.app.status import AppStatus
from reconciler.config import AppConfig, parse_config
from reconciler.daemon.access import admin_token_path, open_access
from reconciler.daemon.in_force import InForce
from reconciler.daemon.ownership import Alone, Ownership
from reconciler.daemon.supervisor import Supervisor
from reconciler.metrics import Metrics
from tests.support.config import Table, app_table, config_text
from tests.support.webhooks import github_headers, gitlab_headers, signature

SECRET = "hook-secret-for-tests"
API_TOKEN = "api-token-for-tests"
MAX_BODY = 16384  # the recorded deliveries are about 9 kB

# The GitHub fixture pushes master of Codertocat/Hello-World; the GitLab one, master of
# mike/diaspora. Apps name these repositories in every form an operator might write.
APPS = {
    "by-clone-url": ("https://github.com/Codertocat/Hello-World.git", "master"),
    "by-ssh-url": ("git@github.com:Codertocat/Hello-World.git", "master"),
    "by-html-url": ("https://github.com/Codertocat/Hello-World", "master"),
    "by-ssh-scheme": ("ssh://git@github.com/Codertocat/Hello-World.git", "master"),
    "other-branch": ("https://github.com/Codertocat/Hello-World.git", "main"),
    "other-repo": ("https://github.com/Codertocat/Goodbye-World.git", "master"),
    "gitlab-app": ("https://example.com/mike/diaspora.git", "master"),
}


def sign(body: bytes, secret: str = SECRET) -> str:
    """The GitHub signature of `body` under the face's webhook secret (or `secret`)."""
    return signature(body, secret)


@dataclass
class FakeLoop:
    """Stands in for an AppLoop: records what the HTTP layer asked of it, and runs until
    `end()` (a loop that ends by itself is one that died)."""

    nudges: int = 0
    syncs: int = 0
    asked_by: str | None = None  # who asked for the last sync, rollback or unpin
    override_freeze: str | None = None  # the reason of the last override of a freeze
    _ended: asyncio.Event = field(default_factory=asyncio.Event)

    def nudge(self) -> None:
        self.nudges += 1

    def sync(self, *, by: str | None = None, override_freeze: str | None = None) -> None:
        self.syncs += 1
        self.asked_by = by
        self.override_freeze = override_freeze

    def asked(self, *, by: str | None) -> None:
        self.nudges += 1
        self.asked_by = by

    async def quiesce(self, grace: float) -> None:
        pass

    async def run(self) -> None:
        await self._ended.wait()

    def end(self) -> None:
        self._ended.set()


@dataclass
class FakeLoops:
    """Makes a FakeLoop for each app the supervisor starts, and keeps them by app."""

    loops: dict[str, FakeLoop] = field(default_factory=dict)

    async def make(self, app: AppConfig, status: AppStatus) -> FakeLoop:
        self.loops[app.name] = FakeLoop()
        return self.loops[app.name]


@dataclass
class HttpFace:
    """Both listeners served, the supervisor and each app's FakeLoop. `client` calls the
    admin listener as the admin (the token the daemon made in state_dir), `anonymous` calls
    it with no identity, `hooks` calls the webhook listener."""

    supervisor: Supervisor
    in_force: InForce
    client: TestClient[Any, Any]
    anonymous: aiohttp.ClientSession
    hooks: TestClient[Any, Any]
    admin_token: str
    loops: dict[str, FakeLoop] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # by name, those `roles` asked for
    store: FileStateStore | None = None  # the apps' memories, as the supervisor holds them

    @property
    def tokens_file(self) -> Path:
        path = self.in_force.config.auth.tokens_file
        assert path is not None, "serve(roles=...) makes a tokens file"
        return path

    def bearer(self, name: str) -> dict[str, str]:
        """The Authorization header of the token named `name`."""
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    @property
    def statuses(self) -> dict[str, AppStatus]:
        return self.supervisor.apps.statuses

    def nudged(self) -> list[str]:
        return sorted(name for name, loop in self.loops.items() if loop.nudges)

    async def github(
        self,
        body: bytes,
        *,
        event: str = "push",
        signature: str | None = None,
        delivery: str | None = None,
    ) -> tuple[int, Any]:
        """Deliver `body` as GitHub would; signed with the face's secret unless `signature`."""
        headers = github_headers(
            signature=signature if signature is not None else sign(body),
            event=event,
            delivery=delivery,
        )
        async with self.hooks.post("/hooks/github", data=body, headers=headers) as answer:
            return answer.status, await answer.json()

    async def gitlab(
        self, body: bytes, *, event: str = "Push Hook", token: str | None = SECRET
    ) -> tuple[int, Any]:
        headers = gitlab_headers(token=token, event=event)
        async with self.hooks.post("/hooks/gitlab", data=body, headers=headers) as answer:
            return answer.status, await answer.json()

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.client.get(path) as answer:
            return answer.status, await answer.json()

    async def metrics(self) -> str:
        async with self.client.get("/metrics") as answer:
            assert answer.status == 200
            assert answer.content_type == "text/plain"
            return await answer.text()


def face_config(
    tmp_path: Path,
    *,
    secrets: bool = True,
    api_token: bool = False,
    apps: Mapping[str, tuple[str, str]] = APPS,
    tokens_file: Path | None = None,
    trusted_proxies: Sequence[str] = (),
    approval: Table | None = None,
) -> str:
    """The face's config (every app with `approval`, when given); writes the secret and API
    token files it names into `tmp_path`."""
    (tmp_path / "secret").write_text(SECRET + "\n")
    (tmp_path / "api-token").write_text(API_TOKEN + "\n")
    secret_files = {
        "github_secret_file": tmp_path / "secret",
        "gitlab_token_file": tmp_path / "secret",
    }
    return config_text(
        daemon={
            "listen": "127.0.0.1:0",
            "state_dir": tmp_path / "state",
            "api_token_file": tmp_path / "api-token" if api_token else "",
        },
        webhook={"max_body_bytes": MAX_BODY, **(secret_files if secrets else {})},
        auth={
            **({"tokens_file": tokens_file} if tokens_file is not None else {}),
            "trusted_proxies": list(trusted_proxies),
        },
        apps=[
            {**app_table(name, repo, branch=branch), **({"approval": approval} if approval else {})}
            for name, (repo, branch) in apps.items()
        ],
    )


@web.middleware
async def peer_from_header(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Lets a test play a client on another host: the socket peer is always loopback here."""
    peer = request.headers.get("X-Test-Peer")
    return await handler(request.clone(remote=peer) if peer else request)


def supervisor_for(
    in_force: InForce,
    *,
    loops: FakeLoops | None = None,
    ownership: Ownership | None = None,
    bus: EventBus | None = None,
    store: FileStateStore | None = None,
) -> Supervisor:
    """A Supervisor on the config `in_force` holds whose loops `loops` makes (not started);
    commit subjects come from real mirrors in its state_dir (empty until something fetches)."""
    state_dir = in_force.config.daemon.state_dir
    return Supervisor(
        in_force=in_force,
        maker=loops or FakeLoops(),
        ownership=ownership or Alone(),
        store=store or FileStateStore(state_dir),
        git=GitMirrors(state_dir),
        metrics=Metrics(),
        bus=bus or EventBus(),
        feedback_status=dict,
    )


@asynccontextmanager
async def serve(
    tmp_path: Path,
    *,
    secrets: bool = True,
    api_token: bool = False,
    apps: Mapping[str, tuple[str, str]] = APPS,
    ownership: Ownership | None = None,
    roles: Mapping[str, tuple[str, Sequence[str]]] | None = None,
    trusted_proxies: Sequence[str] = (),
    approval: Table | None = None,
) -> AsyncIterator[HttpFace]:
    """The HTTP face on the config `face_config` writes, with a FakeLoop per app it runs.
    With `roles` (name: (role, app globs)), a tokens file holds a token of each, and one of
    an admin that `client` uses."""
    tokens_file = tmp_path / "tokens.toml" if roles is not None else None
    tokens: dict[str, str] = {}
    if tokens_file is not None:
        for name, (role, globs) in {**(roles or {}), "face-admin": ("admin", ())}.items():
            tokens[name] = add_token(tokens_file, name=name, role=role, apps=list(globs))
    config = parse_config(
        face_config(
            tmp_path,
            secrets=secrets,
            api_token=api_token,
            apps=apps,
            tokens_file=tokens_file,
            trusted_proxies=trusted_proxies,
            approval=approval,
        )
    )
    in_force, loops = InForce(config), FakeLoops()
    store = FileStateStore(config.daemon.state_dir)
    supervisor = supervisor_for(in_force, loops=loops, ownership=ownership, store=store)
    await supervisor.start()
    admin_server: TestServer | None = None

    def listening() -> str:
        return f"127.0.0.1:{admin_server.port if admin_server is not None else 0}"

    access, _ = open_access(
        config, listening=listening, public_url=lambda: in_force.config.daemon.public_url
    )
    token = tokens["face-admin"] if tokens else admin_token_path(config).read_text().strip()
    try:
        hooks_app = build_webhook_app(supervisor.view, supervisor.steering)
        hooks_app.middlewares.insert(0, peer_from_header)
        admin_app = build_admin_app(supervisor.view, supervisor.steering, access)
        admin_app.middlewares.insert(0, peer_from_header)
        admin_server = TestServer(admin_app)
        async with (
            TestClient(TestServer(hooks_app)) as hooks,
            TestClient(admin_server, headers={"Authorization": f"Bearer {token}"}) as client,
            aiohttp.ClientSession(base_url=str(admin_server.make_url("/"))) as anonymous,
        ):
            yield HttpFace(
                supervisor, in_force, client, anonymous, hooks, token, loops.loops, tokens, store
            )
    finally:
        await supervisor.stop()
