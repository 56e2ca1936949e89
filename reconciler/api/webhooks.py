"""Webhook deliveries from GitHub and GitLab: authenticate, parse, match to apps.

A webhook is an untrusted nudge. All it may do is make the next pass of the
apps it names start now; the pass reads the revision from git itself. Nothing here trusts the
payload's commit SHA, so a replayed or forged-but-signed delivery costs at most one extra pass.

Pure functions, no I/O. The HTTP layer reads the body (`check_body_size` first), verifies the
signature or token before parsing anything, then parses and matches; it turns a
`WebhookRejected` into its status code and a metrics outcome. Given any bytes and headers,
these functions return a result or raise `WebhookRejected`, never anything else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from typing import Literal

from reconciler.decisions.repourl import normalise_repo_url
from reconciler.errors import ReconcilerError

__all__ = [
    "Nudged",
    "PushEvent",
    "RejectReason",
    "WebhookRejected",
    "check_body_size",
    "matches",
    "parse_github",
    "parse_gitlab",
    "verify_github_signature",
    "verify_gitlab_token",
]

RejectReason = Literal["bad_signature", "no_secret", "malformed", "too_large", "busy", "slow_body"]

# GitHub: X-Hub-Signature-256 is "sha256=" and the hex HMAC-SHA256 of the raw body.
_GITHUB_SIGNATURE = re.compile(r"sha256=(?P<hex>[0-9a-fA-F]{64})")

# Fields naming the pushed repository; any of them may be how an app's `repo` spells it.
_GITHUB_URL_FIELDS = ("clone_url", "ssh_url", "html_url", "git_url", "svn_url", "url")
_GITLAB_PROJECT_URL_FIELDS = (
    "git_http_url",
    "git_ssh_url",
    "web_url",
    "http_url",
    "ssh_url",
    "url",
    "homepage",
)
_GITLAB_REPOSITORY_URL_FIELDS = ("git_http_url", "git_ssh_url", "url", "homepage")

_BRANCH_PREFIX = "refs/heads/"
_NULL_SHA = "0" * 40


@dataclasses.dataclass(frozen=True)
class PushEvent:
    """A push to one repository, as far as deciding which apps to nudge needs it."""

    repo_urls: frozenset[str]
    """Every URL the payload gives for the repository, normalised (see `normalise_repo_url`)."""
    branch: str | None
    """`main` for `refs/heads/main`; None for tags and other refs."""
    deleted: bool
    """The ref was deleted by this push."""
    after: str
    """The pushed commit, logged when the push is received; the daemon never deploys from it."""


@dataclasses.dataclass(frozen=True)
class Nudged:
    """What a push nudged: the apps told (here, or their owner through the lease table),
    and those whose owner could not be told (the table failed; their next poll finds it)."""

    apps: list[str]
    not_forwarded: list[str] = dataclasses.field(default_factory=list)


class WebhookRejected(ReconcilerError):
    """The delivery is refused; answer with `status`, count it under `reason`.

    The message is one line and safe to return to the client: it never contains the secret,
    the token or the signature that was sent.
    """

    def __init__(self, status: int, reason: RejectReason, message: str) -> None:
        self.status = status
        self.reason: RejectReason = reason
        self.message = message
        super().__init__(message)


def check_body_size(*, size: int | None, limit: int) -> None:
    """Refuse a body over `limit` bytes (413); `size` is None when not yet known."""
    if size is not None and size > limit:
        raise WebhookRejected(413, "too_large", f"body is larger than {limit} bytes")


def verify_github_signature(*, secret: bytes | None, body: bytes, header: str | None) -> None:
    """Check `X-Hub-Signature-256` against the HMAC-SHA256 of the raw body, in constant time.

    Raises WebhookRejected 401: `no_secret` when no secret is configured (an unsigned hook is
    never accepted), `bad_signature` when the header is missing, not `sha256=<64 hex>` (the
    SHA-1 `X-Hub-Signature` form included) or does not match.
    """
    if not secret:
        raise WebhookRejected(401, "no_secret", "no GitHub webhook secret is configured")
    if header is None:
        raise WebhookRejected(401, "bad_signature", "X-Hub-Signature-256 header is missing")
    match = _GITHUB_SIGNATURE.fullmatch(header.strip())
    if match is None:
        raise WebhookRejected(
            401, "bad_signature", "X-Hub-Signature-256 is not sha256=<64 hex digits>"
        )
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, bytes.fromhex(match["hex"])):
        raise WebhookRejected(401, "bad_signature", "X-Hub-Signature-256 does not match the body")


def verify_gitlab_token(*, token: bytes | None, header: str | None) -> None:
    """Check `X-Gitlab-Token` against the configured token, in constant time.

    Raises WebhookRejected 401: `no_secret` when no token is configured, `bad_signature` when
    the header is missing or differs.
    """
    if not token:
        raise WebhookRejected(401, "no_secret", "no GitLab webhook token is configured")
    if header is None:
        raise WebhookRejected(401, "bad_signature", "X-Gitlab-Token header is missing")
    try:
        # aiohttp hands over undecodable header bytes as surrogate escapes; this restores them.
        sent = header.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        sent = b""
    # Comparing digests keeps the time independent of where, and whether, the lengths differ.
    if not sent or not hmac.compare_digest(
        hashlib.sha256(token).digest(), hashlib.sha256(sent).digest()
    ):
        raise WebhookRejected(401, "bad_signature", "X-Gitlab-Token does not match")


def parse_github(event: str | None, body: bytes) -> PushEvent | Literal["ping"] | None:
    """Read a GitHub delivery, given `X-GitHub-Event` and the raw body.

    `ping` gives "ping"; `push` gives a PushEvent; any other event gives None (ignored) and
    its body is not read. A missing event header, or a push whose body is not a JSON object
    with a `ref` and a `repository`, raises WebhookRejected 400 `malformed`.
    """
    if event is None:
        raise WebhookRejected(400, "malformed", "X-GitHub-Event header is missing")
    event = event.strip()
    if event == "ping":
        return "ping"
    if event != "push":
        return None
    payload = _json_object(body)
    return _push_event(
        ref=payload.get("ref"),
        after=payload.get("after"),
        deleted=payload.get("deleted"),
        urls=_urls(payload.get("repository"), _GITHUB_URL_FIELDS, name="repository"),
    )


def parse_gitlab(event: str | None, body: bytes) -> PushEvent | None:
    """Read a GitLab delivery, given `X-Gitlab-Event` and the raw body.

    `Push Hook` and `Tag Push Hook` give a PushEvent (a tag push has branch None); any other
    event gives None, which the HTTP layer answers with 200 because GitLab disables hooks that
    keep failing. A missing event header, or a push whose body is not a JSON object with a
    `ref` and a `project` or `repository`, raises WebhookRejected 400 `malformed`.
    """
    if event is None:
        raise WebhookRejected(400, "malformed", "X-Gitlab-Event header is missing")
    event = event.strip()
    if event not in ("Push Hook", "Tag Push Hook"):
        return None
    payload = _json_object(body)
    project, repository = payload.get("project"), payload.get("repository")
    if not isinstance(project, Mapping) and not isinstance(repository, Mapping):
        raise WebhookRejected(400, "malformed", "push has no project or repository object")
    urls = [
        *_optional_urls(project, _GITLAB_PROJECT_URL_FIELDS),
        *_optional_urls(repository, _GITLAB_REPOSITORY_URL_FIELDS),
    ]
    push = _push_event(
        ref=payload.get("ref"),
        after=payload.get("after"),
        deleted=None,  # GitLab marks a deleted ref only by an all-zero `after`
        urls=urls,
    )
    if event == "Tag Push Hook":
        return dataclasses.replace(push, branch=None)
    return push


def matches(event: PushEvent, *, repo_url: str, branch: str) -> bool:
    """Whether the push concerns an app tracking `branch` of `repo_url`.

    A deleted branch, a tag, or a `repo_url` that cannot be normalised never matches.
    """
    if event.deleted or event.branch is None or event.branch != branch:
        return False
    try:
        return normalise_repo_url(repo_url) in event.repo_urls
    except ValueError:
        return False


def _json_object(body: bytes) -> Mapping[str, object]:
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise WebhookRejected(
            400,
            "malformed",
            f"body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
        ) from exc
    except UnicodeDecodeError as exc:
        raise WebhookRejected(400, "malformed", "body is not UTF-8 encoded JSON") from exc
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise WebhookRejected(400, "malformed", "body holds a value that cannot be read") from exc
    except RecursionError as exc:
        raise WebhookRejected(400, "malformed", "body is nested too deeply") from exc
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "malformed", "body is not a JSON object")
    return payload


def _push_event(*, ref: object, after: object, deleted: object, urls: Iterable[str]) -> PushEvent:
    if not isinstance(ref, str):
        raise WebhookRejected(400, "malformed", "push has no ref string")
    if deleted is None:
        deleted = False
    if not isinstance(deleted, bool):
        raise WebhookRejected(400, "malformed", "push has a non-boolean 'deleted'")
    if after is None:
        after = ""
    if not isinstance(after, str):
        raise WebhookRejected(400, "malformed", "push has a non-string 'after'")
    repo_urls = frozenset(urls)
    if not repo_urls:
        raise WebhookRejected(400, "malformed", "push names no repository URL")
    branch = ref.removeprefix(_BRANCH_PREFIX) if ref.startswith(_BRANCH_PREFIX) else None
    return PushEvent(
        repo_urls=repo_urls,
        branch=branch or None,
        deleted=deleted or after == _NULL_SHA,
        after=after,
    )


def _urls(obj: object, fields: Iterable[str], *, name: str) -> list[str]:
    if not isinstance(obj, Mapping):
        raise WebhookRejected(400, "malformed", f"push has no {name} object")
    return _optional_urls(obj, fields)


def _optional_urls(obj: object, fields: Iterable[str]) -> list[str]:
    """The normalised forms of the URL fields of `obj` that hold a usable git URL."""
    if not isinstance(obj, Mapping):
        return []
    urls: list[str] = []
    for field in fields:
        value = obj.get(field)
        if not isinstance(value, str):
            continue
        try:
            urls.append(normalise_repo_url(value))
        except ValueError:
            continue  # e.g. an empty homepage; the other fields still name the repository
    return urls
