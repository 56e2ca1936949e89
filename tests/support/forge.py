"""Fake forges and a fake chat service on 127.0.0.1, for the feedback tests.

`FakeForge` speaks the subset of the GitHub REST API (under `/api/v3`, as GitHub Enterprise
serves it) and of GitLab's (under `/api/v4`) that the daemon uses, checks what the real ones
check (the token, required fields, allowed states, GitLab's status transitions), answers
with JSON shaped like theirs (with ids), and records every request. It can answer 500 or
401, or hang, on demand. It can also serve bare repositories over git's smart HTTP protocol
(through `git http-backend`), so an app's repository can live on the forge's own host, as
on GitHub, and be routed there by the daemon.

    async with FakeForge() as forge:
        forge.serve_git("acme/web", repo.remote)
        forge.fail(500)          # every API call answers 500 ...
        forge.hang()             # ... or never answers ...
        forge.heal()             # ... until this

`ChatReceiver` takes what Apprise's `json://` service posts (`{"version", "title",
"message", "type"}`) and records it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from aiohttp import web

TOKEN = "forge-test-token-0123456789"
GITHUB_STATES = frozenset({"error", "failure", "pending", "success"})
DEPLOYMENT_STATES = frozenset(
    {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
)
GITLAB_STATES = frozenset({"pending", "running", "success", "failed", "canceled"})
# GitLab keeps one status per (project, sha, name) while it is pending or running, and moves
# it only forward; a finished one is followed by a new status.
GITLAB_MOVES = {
    "pending": {"running", "success", "failed", "canceled"},
    "running": {"success", "failed", "canceled"},
}
_SHA = re.compile(r"[0-9a-f]{40}")
_STAMP = "2024-01-01T00:00:00Z"


@dataclass
class Recorded:
    """One request as the fake received it and what it answered (0 while it hangs)."""

    method: str
    path: str  # percent-encoded, as sent
    headers: dict[str, str]
    body: Any
    status: int = 0

    @property
    def kind(self) -> str:
        """`status`, `deployment` or `deployment_status` (GitHub), `gitlab_status`, or `?`."""
        if self.path.startswith("/api/v4/"):
            return "gitlab_status"
        if re.search(r"/deployments/\d+/statuses$", self.path):
            return "deployment_status"
        if self.path.endswith("/deployments"):
            return "deployment"
        if "/statuses/" in self.path:
            return "status"
        return "?"

    @property
    def state(self) -> str | None:
        return self.body.get("state") if isinstance(self.body, dict) else None


@dataclass
class _Repo:
    statuses: list[dict[str, Any]] = field(default_factory=list)
    deployments: dict[int, dict[str, Any]] = field(default_factory=dict)


class _Server:
    """An aiohttp app on 127.0.0.1 at a port of its own."""

    def __init__(self) -> None:
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        self.port = int(listener.getsockname()[1])
        await web.SockSite(self._runner, listener).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class FakeForge(_Server):
    def __init__(self, *, token: str = TOKEN) -> None:
        super().__init__()
        self.token = token
        self.requests: list[Recorded] = []
        self.hanging = 0  # requests being held right now
        self._fault: int | None = None
        self._release = asyncio.Event()
        self._release.set()
        self._repos: dict[str, _Repo] = {}
        self._gitlab: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._git: dict[str, Path] = {}
        self._ids = itertools.count(1001)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    async def __aenter__(self) -> FakeForge:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release.set()
        await self.stop()

    @property
    def github_api_url(self) -> str:
        return f"{self.url}/api/v3"

    @property
    def gitlab_api_url(self) -> str:
        return f"{self.url}/api/v4"

    # Steering -------------------------------------------------------------------------

    def fail(self, status: int) -> None:
        """Answer every API request with `status` (500, 401, ...) until heal()."""
        self._fault = status
        self._release.set()

    def hang(self) -> None:
        """Hold every API request without an answer until heal()."""
        self._fault = None
        self._release.clear()

    def heal(self) -> None:
        self._fault = None
        self._release.set()

    def serve_git(self, path: str, repository: Path) -> str:
        """Serve the bare `repository` at `/<path>.git`; its clone URL."""
        self._git[path.strip("/").lower()] = repository
        return f"{self.url}/{path.strip('/')}.git"

    # Reading what happened --------------------------------------------------------------

    def answered(self, kind: str | None = None, *, sha: str | None = None) -> list[Recorded]:
        """Requests that got a 2xx answer, oldest first (of one kind, about one commit)."""
        found = [r for r in self.requests if 200 <= r.status < 300]
        if kind is not None:
            found = [r for r in found if r.kind == kind]
        if sha is not None:
            found = [r for r in found if _about(r, sha, self)]
        return found

    def sequence(self, sha: str) -> list[str]:
        """What a commit was told, in order: `status:pending`, `deployment`,
        `deployment_status:in_progress`, `gitlab:running`..."""
        out = []
        for request in self.answered(sha=sha):
            if request.kind == "deployment":
                out.append("deployment")
            elif request.kind == "gitlab_status":
                out.append(f"gitlab:{request.state}")
            else:
                out.append(f"{request.kind}:{request.state}")
        return out

    def deployment_sha(self, deployment_id: int) -> str | None:
        for repo in self._repos.values():
            if deployment_id in repo.deployments:
                return str(repo.deployments[deployment_id]["sha"])
        return None

    # Serving ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if not path.startswith("/api/"):
            return await self._serve_git(request)
        try:
            body: Any = await request.json() if request.can_read_body else None
        except ValueError:
            body = None
        recorded = Recorded(request.method, path, dict(request.headers), body)
        self.requests.append(recorded)
        response = await self._api(request, path, body)
        recorded.status = response.status
        return response

    async def _api(self, request: web.Request, path: str, body: Any) -> web.Response:
        if not self._release.is_set():
            self.hanging += 1
            try:
                await self._release.wait()
            finally:
                self.hanging -= 1
        if self._fault is not None:
            return _json({"message": f"fault injected: {self._fault}"}, self._fault)
        if request.method != "POST":
            return _json({"message": "Not Found"}, 404)
        if path.startswith("/api/v3/"):
            return self._github(request, path.removeprefix("/api/v3"), body)
        if path.startswith("/api/v4/"):
            return self._gitlab_status(request, path.removeprefix("/api/v4"), body)
        return _json({"message": "Not Found"}, 404)

    # GitHub ---------------------------------------------------------------------------

    def _github(self, request: web.Request, path: str, body: Any) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer") or token != self.token:
            return _json(
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
                401,
            )
        if not isinstance(body, dict):
            return _json({"message": "Problems parsing JSON"}, 400)
        match = re.fullmatch(r"/repos/([^/]+)/([^/]+)/(.+)", path)
        if match is None:
            return _json({"message": "Not Found"}, 404)
        owner, name, rest = match.groups()
        full = f"{unquote(owner)}/{unquote(name)}"
        repo = self._repos.setdefault(full.lower(), _Repo())
        if status := re.fullmatch(r"statuses/([^/]+)", rest):
            return self._github_status(repo, full, status.group(1), body)
        if rest == "deployments":
            return self._github_deployment(repo, full, body)
        if deployment := re.fullmatch(r"deployments/(\d+)/statuses", rest):
            return self._github_deployment_status(repo, full, int(deployment.group(1)), body)
        return _json({"message": "Not Found"}, 404)

    def _github_status(
        self, repo: _Repo, full: str, sha: str, body: dict[str, Any]
    ) -> web.Response:
        if not _SHA.fullmatch(sha):
            return _invalid("Status", "sha", f"No commit found for SHA: {sha}")
        state = body.get("state")
        if state not in GITHUB_STATES:
            return _invalid("Status", "state", "state is not included in the list")
        description = body.get("description") or ""
        if len(description) > 140:
            return _invalid("Status", "description", "description is too long (maximum is 140)")
        identifier = next(self._ids)
        status = {
            "url": f"{self.github_api_url}/repos/{full}/statuses/{sha}",
            "id": identifier,
            "node_id": f"SC_{identifier}",
            "state": state,
            "description": description,
            "target_url": body.get("target_url"),
            "context": body.get("context") or "default",
            "created_at": _STAMP,
            "updated_at": _STAMP,
            "creator": {"login": "reconciler-bot", "id": 1, "type": "User"},
        }
        repo.statuses.append({**status, "sha": sha})
        return _json(status, 201)

    def _github_deployment(self, repo: _Repo, full: str, body: dict[str, Any]) -> web.Response:
        ref = body.get("ref")
        if not isinstance(ref, str) or not ref:
            return _invalid("Deployment", "ref", "ref is missing")
        contexts = body.get("required_contexts", [])
        if not isinstance(contexts, list):
            return _invalid("Deployment", "required_contexts", "must be an array")
        identifier = next(self._ids)
        environment = body.get("environment") or "production"
        deployment = {
            "url": f"{self.github_api_url}/repos/{full}/deployments/{identifier}",
            "id": identifier,
            "node_id": f"DE_{identifier}",
            "sha": ref,
            "ref": ref,
            "task": body.get("task") or "deploy",
            "payload": body.get("payload") or {},
            "original_environment": environment,
            "environment": environment,
            "description": body.get("description"),
            "creator": {"login": "reconciler-bot", "id": 1, "type": "User"},
            "created_at": _STAMP,
            "updated_at": _STAMP,
            "statuses_url": f"{self.github_api_url}/repos/{full}/deployments/{identifier}/statuses",
            "repository_url": f"{self.github_api_url}/repos/{full}",
            "transient_environment": bool(body.get("transient_environment", False)),
            "production_environment": bool(body.get("production_environment", False)),
        }
        repo.deployments[identifier] = deployment
        return _json(deployment, 201)

    def _github_deployment_status(
        self, repo: _Repo, full: str, deployment_id: int, body: dict[str, Any]
    ) -> web.Response:
        if deployment_id not in repo.deployments:
            return _json({"message": "Not Found"}, 404)
        state = body.get("state")
        if state not in DEPLOYMENT_STATES:
            return _invalid("DeploymentStatus", "state", "state is not included in the list")
        identifier = next(self._ids)
        deployment = repo.deployments[deployment_id]
        status = {
            "url": f"{deployment['url']}/statuses/{identifier}",
            "id": identifier,
            "node_id": f"DES_{identifier}",
            "state": state,
            "description": body.get("description") or "",
            "environment": body.get("environment") or deployment["environment"],
            "target_url": body.get("log_url") or "",
            "log_url": body.get("log_url") or "",
            "environment_url": body.get("environment_url") or "",
            "deployment_url": deployment["url"],
            "repository_url": f"{self.github_api_url}/repos/{full}",
            "created_at": _STAMP,
            "updated_at": _STAMP,
            "creator": {"login": "reconciler-bot", "id": 1, "type": "User"},
        }
        deployment.setdefault("statuses", []).append(status)
        return _json(status, 201)

    # GitLab ---------------------------------------------------------------------------

    def _gitlab_status(self, request: web.Request, path: str, body: Any) -> web.Response:
        if request.headers.get("PRIVATE-TOKEN") != self.token:
            return _json({"message": "401 Unauthorized"}, 401)
        match = re.fullmatch(r"/projects/([^/]+)/statuses/([^/]+)", path)
        if match is None:
            return _json({"error": "404 Not Found"}, 404)
        project, sha = unquote(match.group(1)), match.group(2)
        if "/" not in project and not project.isdigit():
            return _json({"message": "404 Project Not Found"}, 404)
        if not isinstance(body, dict):
            return _json({"error": "state is missing"}, 400)
        state = body.get("state")
        if state not in GITLAB_STATES:
            return _json({"error": "state does not have a valid value"}, 400)
        if not _SHA.fullmatch(sha):
            return _json({"message": "404 Commit Not Found"}, 404)
        name = body.get("name") or body.get("context") or "default"
        key = (project.lower(), sha, name)
        current = self._gitlab.get(key)
        if current is not None and current["status"] in GITLAB_MOVES:
            if state not in GITLAB_MOVES[current["status"]]:
                return _json(
                    {"message": f"Cannot transition status via :{state} from :{current['status']}"},
                    400,
                )
            status = current
        else:
            identifier = next(self._ids)
            status = {"id": identifier, "sha": sha, "name": name, "created_at": _STAMP}
            self._gitlab[key] = status
        status.update(
            {
                "status": state,
                "ref": body.get("ref"),
                "target_url": body.get("target_url"),
                "description": body.get("description"),
                "started_at": _STAMP if state != "pending" else None,
                "finished_at": _STAMP if state in ("success", "failed", "canceled") else None,
                "allow_failure": False,
                "coverage": None,
                "author": {"id": 1, "username": "reconciler-bot", "state": "active"},
            }
        )
        return _json(status, 201)

    # git over HTTP --------------------------------------------------------------------

    async def _serve_git(self, request: web.Request) -> web.StreamResponse:
        path = unquote(request.rel_url.raw_path)
        match = re.fullmatch(r"/(.+?\.git)(/.*)", path)
        repository = self._git.get(match.group(1).removesuffix(".git").lower()) if match else None
        if match is None or repository is None:
            return web.Response(status=404, text="not found")
        body = await request.read()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(repository.parent),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "REQUEST_METHOD": request.method,
            "PATH_INFO": f"/{repository.name}{match.group(2)}",
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
        }
        process = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate(body)
        head, sep, payload = out.partition(b"\r\n\r\n")
        if not sep:
            head, _, payload = out.partition(b"\n\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers[key.strip()] = value.strip()
        return web.Response(status=status, body=payload, headers=headers)


def _about(request: Recorded, sha: str, forge: FakeForge) -> bool:
    if request.kind in ("status", "gitlab_status"):
        return request.path.rstrip("/").endswith(sha)
    if request.kind == "deployment":
        return isinstance(request.body, dict) and request.body.get("ref") == sha
    if request.kind == "deployment_status":
        found = re.search(r"/deployments/(\d+)/statuses$", request.path)
        return found is not None and forge.deployment_sha(int(found.group(1))) == sha
    return False


def _json(payload: Any, status: int) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload), content_type="application/json")


def _invalid(resource: str, field_name: str, message: str) -> web.Response:
    return _json(
        {
            "message": "Validation Failed",
            "errors": [
                {"resource": resource, "code": "custom", "field": field_name, "message": message}
            ],
            "documentation_url": "https://docs.github.com/rest",
        },
        422,
    )


class ChatReceiver(_Server):
    """Where `json://127.0.0.1:<port>/<path>` posts; records every message."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.fault: int | None = None
        self.app.router.add_post("/{tail:.*}", self._take)

    async def __aenter__(self) -> ChatReceiver:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def apprise_url(self, path: str = "hooks/deploys") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    async def _take(self, request: web.Request) -> web.Response:
        if self.fault is not None:
            return web.Response(status=self.fault, text="fault injected")
        self.messages.append(await request.json())
        self.paths.append(request.path)
        return web.Response(status=200, text="ok")
