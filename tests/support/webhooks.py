"""Webhook deliveries as GitHub and GitLab send them, signed with a test's secret.

GitHub signs the body: `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body under the
secret, hex>`. GitLab signs nothing and sends the secret itself as `X-Gitlab-Token`.

    body, headers = signed_push(repo_url=repo.url, after=repo.head(), secret=SECRET)
    await http.post(f"{url}/hooks/github", data=body, headers=headers)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from pathlib import Path

FIXTURES = Path(__file__).parent.parent / "fixtures" / "webhooks"


def fixture(name: str) -> bytes:
    """A recorded delivery body from tests/fixtures/webhooks (its README says where from)."""
    return (FIXTURES / name).read_bytes()


def hmac_hex(body: bytes, secret: str | bytes, *, algorithm: str = "sha256") -> str:
    """The hex HMAC of `body` under `secret` (`algorithm` as hashlib names it)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, getattr(hashlib, algorithm)).hexdigest()


def signature(body: bytes, secret: str | bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends with `body` when the hook has `secret`."""
    return "sha256=" + hmac_hex(body, secret)


def github_headers(
    *, signature: str | None, event: str = "push", delivery: str | None = None
) -> dict[str, str]:
    """A GitHub delivery's headers; no signature header when `signature` is None."""
    headers = {"X-GitHub-Event": event, "Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    if delivery:
        headers["X-GitHub-Delivery"] = delivery
    return headers


def gitlab_headers(*, token: str | None, event: str = "Push Hook") -> dict[str, str]:
    """A GitLab delivery's headers; no X-Gitlab-Token when `token` is None."""
    headers = {"X-Gitlab-Event": event}
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return headers


def push_body(*, repo_url: str, after: str, branch: str = "main") -> bytes:
    """A GitHub push of `branch` of `repo_url` to commit `after`, as much of it as the daemon
    reads."""
    payload = {
        "ref": f"refs/heads/{branch}",
        "after": after,
        "repository": {"clone_url": repo_url, "html_url": repo_url},
    }
    return json.dumps(payload).encode()


def signed_push(
    *,
    repo_url: str,
    after: str,
    secret: str,
    branch: str = "main",
    delivery: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A GitHub push delivery signed with `secret`: its body and headers (a fresh delivery id
    unless `delivery` is given)."""
    body = push_body(repo_url=repo_url, after=after, branch=branch)
    headers = github_headers(
        signature=signature(body, secret), delivery=delivery or str(uuid.uuid4())
    )
    return body, headers
