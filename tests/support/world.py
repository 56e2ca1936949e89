"""One app on real parts, for end-to-end tests: a git remote, the sandbox AWS, the daemon.

    world = World.create(tmp_path, aws, registry)
    async with world.daemon() as daemon:
        await daemon.wait_phase("InSync")

Every World has unique names (app, cluster, service, ECR repository), so tests share one
moto server, one dockerd and one registry without stepping on each other.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import boto3

from reconciler.aio.backoff import Timings
from reconciler.app.loop import AppLoop
from reconciler.config import Config, parse_config
from reconciler.daemon.access import admin_token_path
from reconciler.daemon.root import Daemon
from reconciler.daemon.supervisor import Supervisor
from reconciler.sandbox.aws import SandboxAws
from reconciler.sandbox.provision import Controller, Strategy, provision_app
from tests.support.config import Table, TomlValue, config_text
from tests.support.gitrepo import GitRepo
from tests.support.inprocess import hooks_url, serving
from tests.support.webhooks import signed_push

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ecs.type_defs import TagTypeDef, TaskDefinitionTypeDef

__all__ = ["DOCKERFILE", "FAST", "WEBHOOK_SECRET", "RunningDaemon", "World", "serving"]

FAST = Timings(retry_base=0.1, retry_cap=1.0, rollout_polls=(0.05, 0.1, 0.2))
DOCKERFILE = "FROM scratch\nCOPY app.txt /app.txt\n"
WEBHOOK_SECRET = "e2e-webhook-secret-value"


@dataclass
class World:
    root: Path
    aws: SandboxAws
    registry: str
    repo: GitRepo
    name: str
    first_commit: str
    app_overrides: dict[str, TomlValue] = field(default_factory=dict)
    daemon_overrides: dict[str, TomlValue] = field(default_factory=dict)
    # Further top-level tables of the config, e.g. {"build": {"network": "host"}}.
    sections: dict[str, Table] = field(default_factory=dict)
    freezes: list[Table] = field(default_factory=list)  # `[[freeze]]` tables

    @classmethod
    def create(
        cls,
        root: Path,
        aws: SandboxAws,
        registry: str,
        *,
        sidecar: bool = True,
        strategy: Strategy | None = None,
        bake_minutes: int | None = None,
        alarms: Sequence[str] = (),
        controller: Controller | None = None,
        lifecycle_hooks: Sequence[dict[str, Any]] = (),
    ) -> World:
        """A new app with its repository and AWS resources; the service deploys with
        `strategy` (ROLLING by default), `bake_minutes`, `alarms`, `controller` and
        `lifecycle_hooks`."""
        name = f"app-{uuid.uuid4().hex[:10]}"
        repo = GitRepo(root / "repo")
        first = repo.commit({"Dockerfile": DOCKERFILE, "app.txt": "version 1\n"}, "first")
        provision_app(
            endpoint_url=aws.endpoint_url,
            region=aws.region,
            cluster=f"{name}-cluster",
            service=name,
            ecr_repository=name,
            family=name,
            image=f"{registry}/{name}:bootstrap",
            sidecar=sidecar,
            tags={"team": "e2e", "app": name},
            strategy=strategy,
            bake_minutes=bake_minutes,
            alarms=alarms,
            controller=controller,
            lifecycle_hooks=lifecycle_hooks,
        )
        (root / "secret").write_text(WEBHOOK_SECRET + "\n")
        return cls(root=root, aws=aws, registry=registry, repo=repo, name=name, first_commit=first)

    @property
    def cluster(self) -> str:
        return f"{self.name}-cluster"

    def settings(self) -> dict[str, Table]:
        """The `[daemon]`, `[aws]` and `[webhook]` tables of this World's config."""
        daemon: Table = {
            "listen": "127.0.0.1:0",
            "poll_interval": 3600,
            "state_dir": self.root / "state",
            "log_format": "json",
            **self.daemon_overrides,
        }
        aws: Table = {
            "region": self.aws.region,
            "endpoint_url": self.aws.endpoint_url,
            "registry": self.registry,
        }
        webhook: Table = {
            "github_secret_file": self.root / "secret",
            "gitlab_token_file": self.root / "secret",
        }
        return {"daemon": daemon, "aws": aws, "webhook": webhook}

    def app_table(self) -> Table:
        """This World's `[[apps]]` table."""
        return {
            "name": self.name,
            "repo": self.repo.url,
            "branch": "main",
            "ecr_repository": self.name,
            "cluster": self.cluster,
            "service": self.name,
            "rollout_timeout": "60s",
            **self.app_overrides,
        }

    def config_text(self) -> str:
        freezes = {"freeze": self.freezes} if self.freezes else {}
        return config_text(**self.settings(), **self.sections, **freezes, apps=[self.app_table()])

    def config(self) -> Config:
        return parse_config(self.config_text())

    def write_config(self) -> Path:
        path = self.root / "reconciler.toml"
        path.write_text(self.config_text())
        return path

    def image(self, revision: str) -> str:
        return f"{self.registry}/{self.name}:{revision}"

    # Inspecting AWS --------------------------------------------------------------------

    def ecs(self) -> ECSClient:
        return boto3.client("ecs", region_name=self.aws.region, endpoint_url=self.aws.endpoint_url)

    def service(self) -> dict[str, Any]:
        answer = self.ecs().describe_services(cluster=self.cluster, services=[self.name])
        return dict(answer["services"][0])

    def task_definition(
        self, arn: str | None = None
    ) -> tuple[TaskDefinitionTypeDef, list[TagTypeDef]]:
        answer = self.ecs().describe_task_definition(
            taskDefinition=arn or self.service()["taskDefinition"], include=["TAGS"]
        )
        return answer["taskDefinition"], answer.get("tags", [])

    def live_image(self) -> str:
        definition, _ = self.task_definition()
        containers = definition["containerDefinitions"]
        return str(next(c["image"] for c in containers if c["name"] == "app"))

    def updates(self) -> int:
        return self.aws.rollouts.update_service_count(self.cluster, self.name)

    @asynccontextmanager
    async def daemon(
        self, *, timings: Timings = FAST, token: str | None = None
    ) -> AsyncIterator[RunningDaemon]:
        """The daemon on this World's config; its `http` calls it with `token` (default: the
        admin token it made in its state_dir)."""
        path = self.write_config()
        async with serving(self.config(), path, timings=timings, token=token) as (
            daemon,
            url,
            http,
        ):
            yield RunningDaemon(self, daemon, url, http, path)


@dataclass
class RunningDaemon:
    world: World
    daemon: Daemon
    url: str
    http: aiohttp.ClientSession
    config_path: Path

    @property
    def admin_token(self) -> str:
        """The admin token the daemon made in its state_dir."""
        return admin_token_path(self.daemon.in_force.config).read_text().strip()

    @property
    def supervisor(self) -> Supervisor:
        """The daemon's app side (made once it runs, as it does inside this block)."""
        supervisor = self.daemon.supervisor
        assert supervisor is not None, "the daemon is not running"
        return supervisor

    def loop(self, name: str | None = None) -> AppLoop:
        """The app's loop, as the supervisor runs it (it holds loops by what it steers)."""
        loop = self.supervisor.apps.loops[name or self.world.name]
        assert isinstance(loop, AppLoop), loop
        return loop

    async def status(self, name: str | None = None) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/status/{name or self.world.name}") as answer:
            assert answer.status == 200, await answer.text()
            return dict(await answer.json())

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 90, what: str = ""
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = await self.status()
            if predicate(status):
                return status
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"timed out waiting for {what or predicate}; "
            f"last status: {json.dumps(status, indent=1)}"
        )

    async def wait_phase(
        self, phase: str, *, revision: str | None = None, timeout: float = 90
    ) -> dict[str, Any]:
        return await self.wait_for(
            lambda s: (
                s["phase"] == phase
                and (
                    revision is None
                    or (
                        s["desired"]["revision"] == revision
                        and s["live"]["image"] == self.world.image(revision)
                    )
                )
            ),
            timeout=timeout,
            what=f"phase {phase} at {revision}",
        )

    async def github_push(
        self, *, secret: str = WEBHOOK_SECRET, delivery: str | None = None
    ) -> aiohttp.ClientResponse:
        body, headers = signed_push(
            repo_url=self.world.repo.url,
            after=self.world.repo.head(),
            secret=secret,
            delivery=delivery,
        )
        hooks = f"{hooks_url(self.daemon)}/hooks/github"
        async with self.http.post(hooks, data=body, headers=headers) as answer:
            await answer.read()
            return answer
