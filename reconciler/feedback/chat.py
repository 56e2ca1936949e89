"""Chat and mail: one message per outcome, through Apprise, to every URL of notify.urls_file.

The URLs file is read when a message goes out, so an edit (a new channel, a rotated webhook
token) applies at once. Each URL is its own delivery: a message that reached Slack but not
the mail server is retried to the mail server only. The URLs carry credentials, so they are
scrubbed from the logs and never named in a message of ours (a URL is named by its place in
the file and its scheme).
"""

from __future__ import annotations

import asyncio
import functools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import apprise

from reconciler.feedback.lane import Rejected, Retry
from reconciler.feedback.translate import APPROVAL_REQUESTED, LABELS, Notice, clip
from reconciler.logs import register_secret

REASON_LINES = 5
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SECRETISH = re.compile(r"(?=.*\d)[^/?&=#@:]{12,}")


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    kind: apprise.NotifyType


@dataclass
class Outgoing:
    """A message on its way: what it says and which URLs already took it."""

    notice: Notice
    message: Message | None = None  # rendered at the first try (the subject needs git)
    done: set[str] = field(default_factory=set)


def render(notice: Notice, *, environment: str, subject: str, dashboard: str) -> Message:
    """Title and body of the message about `notice`."""
    label = LABELS.get(notice.outcome, notice.outcome)
    short = notice.revision[:7]
    title = clip(f"{notice.app}: {label} {short} in {environment}", 200)
    lines = [
        f"App: {notice.app}",
        f"Environment: {environment}",
        f"Commit: {short} {clip(subject, 200)}".rstrip(),
        f"Outcome: {notice.outcome}",
    ]
    if notice.outcome == APPROVAL_REQUESTED:
        lines.append(f"Approve or reject it: {dashboard}")
        return Message(title=title, body="\n".join(lines), kind=apprise.NotifyType.INFO)
    lines.append(
        f"Duration: {duration(notice.finished_at.timestamp() - notice.started_at.timestamp())}"
    )
    reason = [_line(line) for line in (notice.error or "").splitlines() if line.strip()]
    if reason:
        lines.append("Reason: " + reason[0].strip())
        lines += [f"  {line}" for line in reason[1:REASON_LINES]]
    lines.append(f"Dashboard: {dashboard}")
    if notice.outcome == "deployed":
        kind = apprise.NotifyType.SUCCESS
    elif notice.outcome == "rolled_back":
        kind = apprise.NotifyType.WARNING
    else:
        kind = apprise.NotifyType.FAILURE
    return Message(title=title, body="\n".join(lines), kind=kind)


def _line(text: str, limit: int = 300) -> str:
    """A line of output as it was (its indentation kept), without control characters."""
    line = _CONTROL.sub("", text).rstrip()
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def duration(seconds: float) -> str:
    """`45s`, `3m 05s`, `1h 02m`."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def read_urls(path: Path) -> list[str]:
    """The Apprise URLs of the file, one a line (blank lines and `#` comments skipped); each
    is registered as a secret before anything can log it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Rejected(f"cannot read notify.urls_file {path}: {exc}") from None
    urls = []
    for line in text.splitlines():
        url = line.strip()
        if not url or url.startswith("#"):
            continue
        hide(url)
        urls.append(url)
    return urls


def hide(url: str) -> None:
    """Scrub the URL, and the parts of it that look like tokens, from every log line."""
    register_secret(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if parts.password:
        register_secret(parts.password)
    for piece in re.split(r"[/?&=#@:]", url):
        if _SECRETISH.fullmatch(piece):
            register_secret(piece)


def name_of(index: int, url: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    return f"URL {index + 1} ({scheme}://)"


@functools.cache
def _load_plugins() -> None:
    """Apprise loads its service modules at the first URL it is given; its PGP mail support
    then imports the deprecated imghdr module, which nothing here uses. Loaded once with that
    warning silenced, so it does not become a log line."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"apprise(\.|$)")
        apprise.Apprise().add("json://localhost")


async def send(url: str, message: Message, *, within: float, name: str) -> None:
    """Deliver `message` to one Apprise URL; Rejected for a URL Apprise cannot use, Retry
    when the service did not take it."""
    _load_plugins()
    notifier = apprise.Apprise()
    if not notifier.add(url):
        raise Rejected(f"{name} is not a URL Apprise knows")
    try:
        result = await asyncio.wait_for(
            notifier.async_notify(
                body=message.body,
                title=message.title,
                notify_type=message.kind,
                timeout=within,
            ),
            within + 1.0,
        )
    except TimeoutError:
        raise Retry(f"{name}: no answer within {within:g} s") from None
    if not result:
        raise Retry(f"{name}: the service did not accept the message")
