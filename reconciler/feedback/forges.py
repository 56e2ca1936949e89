"""Telling a forge what the record says it should show: GitHub through gidgethub, GitLab's
REST API through aiohttp.

Each delivery works off the difference between a commit's `want` and what was `sent`, one
request at a time, and writes the record after every request that succeeded, so a failure
halfway (the deployment created, its status not yet) resumes where it stopped instead of
creating a second deployment. Failures come out as `Retry` (may pass: no answer, a timeout,
5xx, 408/425/429, a rate limit) or `Rejected` (will not change by asking again: other 4xx).
Tokens travel only in headers and never in a message.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import aiohttp
import gidgethub
from gidgethub.aiohttp import GitHubAPI
from yarl import URL

from reconciler.feedback.lane import Rejected, Retry
from reconciler.feedback.record import Commit, Want
from reconciler.feedback.routing import Forge
from reconciler.feedback.translate import clip

USER_AGENT = "reconciler"
RETRYABLE = frozenset({408, 425, 429})
_T = TypeVar("_T")


@dataclass
class Job:
    """One commit of one app to bring up to date on its forge."""

    app: str
    forge: Forge
    entry: Commit
    token: str
    target_url: str  # the app's dashboard page
    environment: str
    environment_url: str  # where the app answers; "" when not configured
    ref: str  # the branch, for GitLab's pipeline of external statuses; "" for a pin
    save: Callable[[], None]  # write the record through


def owes(kind: Literal["github", "gitlab"], entry: Commit) -> bool:
    """Whether the forge has yet to hear something about `entry`."""
    want = entry.want
    if want is None:
        return False
    if kind == "gitlab":
        return entry.status_sent != f"{entry.attempt}:{gitlab_state(want)}"
    if entry.status_sent != f"{entry.attempt}:{want.status}":
        return True
    if want.deployment is None:
        return False
    return entry.deployment_attempt != entry.attempt or entry.deployment_sent != want.deployment


async def deliver(session: aiohttp.ClientSession, job: Job) -> None:
    if job.forge.kind == "github":
        await _github(session, job)
    else:
        await _gitlab(session, job)


# GitHub -------------------------------------------------------------------------------


async def _github(session: aiohttp.ClientSession, job: Job) -> None:
    entry = job.entry
    gh = GitHubAPI(session, USER_AGENT, oauth_token=job.token, base_url=job.forge.api_url)
    owner, repo = job.forge.project.split("/", 1)
    where = {"owner": owner, "repo": repo}
    want, attempt = _want(entry), entry.attempt
    sent = f"{attempt}:{want.status}"
    if entry.status_sent != sent:
        await _github_call(
            gh.post(
                "/repos/{owner}/{repo}/statuses/{sha}",
                url_vars={**where, "sha": entry.sha},
                data={
                    "state": want.status,
                    "target_url": job.target_url,
                    "description": clip(want.description),
                    "context": context(job),
                },
            )
        )
        entry.status_sent = sent
        job.save()
    deployment = want.deployment
    if deployment is None:
        return
    if entry.deployment_id is None or entry.deployment_attempt != attempt:
        created = await _github_call(
            gh.post(
                "/repos/{owner}/{repo}/deployments",
                url_vars=where,
                data={
                    "ref": entry.sha,
                    "environment": job.environment,
                    "auto_merge": False,
                    "required_contexts": [],
                    "transient_environment": False,
                    "description": clip(want.deployment_description or want.description),
                },
            )
        )
        identifier = created.get("id") if isinstance(created, dict) else None
        if not isinstance(identifier, int) or isinstance(identifier, bool):
            raise Retry("GitHub answered the deployment without an id")
        entry.deployment_id, entry.deployment_attempt = identifier, attempt
        entry.deployment_sent = None
        job.save()
    if entry.deployment_sent != deployment:
        status: dict[str, Any] = {
            "state": deployment,
            "log_url": job.target_url,
            "description": clip(want.deployment_description or want.description),
        }
        if job.environment_url:
            status["environment_url"] = job.environment_url
        await _github_call(
            gh.post(
                "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses",
                url_vars={**where, "deployment_id": str(entry.deployment_id)},
                data=status,
            )
        )
        entry.deployment_sent = deployment
        job.save()


async def _github_call(call: Awaitable[_T]) -> _T:
    try:
        return await call
    except gidgethub.RateLimitExceeded as exc:
        reset = getattr(exc.rate_limit, "reset_datetime", None)
        wait = max(0.0, reset.timestamp() - time.time()) if reset is not None else 60.0
        raise Retry(f"GitHub rate limit exceeded; resets in {wait:.0f} s", after=wait) from None
    except gidgethub.GitHubBroken as exc:
        raise Retry(f"GitHub answered {_status(exc)}") from None
    except gidgethub.BadRequest as exc:
        code = int(exc.status_code)
        message = _github_message(exc)
        if code in RETRYABLE or (code == 403 and "rate limit" in message.lower()):
            raise Retry(
                f"GitHub answered {_status(exc)}: {message}", after=_retry_after(exc.headers)
            ) from None
        raise Rejected(f"GitHub answered {_status(exc)}: {message}{_hint(code)}") from None
    except gidgethub.HTTPException as exc:
        raise Rejected(f"GitHub answered {_status(exc)}") from None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        raise Retry(f"GitHub unreachable: {_describe(exc)}") from None


def _github_message(exc: gidgethub.HTTPException) -> str:
    text = str(exc)
    return clip(text, 200) if text and text != exc.status_code.phrase else exc.status_code.phrase


def context(job: Job) -> str:
    """The commit status context and GitLab status name: `reconciler/<app>`."""
    return f"reconciler/{job.app}"


# GitLab -------------------------------------------------------------------------------


def gitlab_state(want: Want) -> str:
    """GitLab's word for the state: a deployment under way is `running`."""
    if want.status == "pending":
        return "running" if want.deployment == "in_progress" else "pending"
    return {"success": "success", "failure": "failed", "error": "canceled"}[want.status]


async def _gitlab(session: aiohttp.ClientSession, job: Job) -> None:
    entry = job.entry
    want, attempt = _want(entry), entry.attempt
    state = gitlab_state(want)
    sent = f"{attempt}:{state}"
    if entry.status_sent == sent:
        return
    project = quote(job.forge.project, safe="")
    url = URL(f"{job.forge.api_url}/projects/{project}/statuses/{entry.sha}", encoded=True)
    payload: dict[str, str] = {
        "state": state,
        "name": context(job),
        "target_url": job.target_url,
        "description": clip(want.description),
    }
    if job.ref:
        payload["ref"] = job.ref
    try:
        async with session.post(
            url,
            json=payload,
            headers={"PRIVATE-TOKEN": job.token, "User-Agent": USER_AGENT},
        ) as answer:
            body = await answer.content.read(64 * 1024)
            code = answer.status
            headers = answer.headers
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise Retry(f"GitLab unreachable: {_describe(exc)}") from None
    if 200 <= code < 300:
        entry.status_sent = sent
        job.save()
        return
    message = _gitlab_message(body)
    if code >= 500 or code in RETRYABLE:
        raise Retry(f"GitLab answered {code}: {message}", after=_retry_after(headers))
    raise Rejected(f"GitLab answered {code}: {message}{_hint(code)}")


def _gitlab_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return clip(body.decode("utf-8", "replace"), 200) or "no message"
    if isinstance(data, dict):
        for key in ("message", "error"):
            if key in data:
                return clip(str(data[key]), 200)
    return clip(str(data), 200)


# Shared -------------------------------------------------------------------------------


def _want(entry: Commit) -> Want:
    assert entry.want is not None, "only commits that owe something are delivered"
    return entry.want


def _status(exc: gidgethub.HTTPException) -> str:
    return f"{int(exc.status_code)} {exc.status_code.phrase}"


def _hint(code: int) -> str:
    if code == 401:
        return " (the token was refused: check the token file)"
    if code in (403, 404):
        return " (does the token have write access to the repository's statuses?)"
    return ""


def _retry_after(headers: Any) -> float:
    try:
        return max(0.0, min(float(headers.get("retry-after", 0) or 0), 3600.0))
    except (TypeError, ValueError):
        return 0.0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "no answer in time"
    return clip(f"{type(exc).__name__}: {exc}", 200)
