"""Where the dashboard's links point: its own pages (under `daemon.public_url` when set) and
the commit pages of the forges that host an app's repository.

Pure functions of the config: nothing is fetched or resolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from reconciler.decisions.repourl import normalise_repo_url

__all__ = ["Links", "commit_url", "commit_url_prefix", "short_sha"]

_SHA = re.compile(r"[0-9a-f]{7,64}")
SHORT = 7  # as the forges show a commit

# Forges whose commit page is https://host/<owner>/<repo>/<segment>/<sha>. Self-hosted GitHub
# Enterprise and GitLab usually live on a host named github.* or gitlab*.*; anything else is
# shown as text, since a guessed link that 404s is worse than none.
_KNOWN_HOSTS = {
    "github.com": "commit",
    "gitlab.com": "commit",
    "codeberg.org": "commit",
    "bitbucket.org": "commits",
}
_SELF_HOSTED = re.compile(r"^(github|gitlab)[a-z0-9-]*\.")


def short_sha(revision: str) -> str:
    return revision[:SHORT] if _SHA.fullmatch(revision) else revision


def commit_url_prefix(repo: str) -> str | None:
    """The commit page of `repo` up to the SHA (`https://github.com/acme/web/commit/`), or
    None where the repository is local or not on a forge we know."""
    try:
        key = normalise_repo_url(repo)
    except ValueError:
        return None
    if key.startswith("file:"):
        return None
    authority, _, path = key.partition("/")
    if authority.startswith("["):  # an IP address names no forge we could know
        return None
    host = authority.partition(":")[0]
    segment = _KNOWN_HOSTS.get(host) or ("commit" if _SELF_HOSTED.match(host) else None)
    if segment is None or path.count("/") < 1:
        return None
    scheme = urlsplit(repo.strip()).scheme.lower() if "://" in repo else ""
    # Only an http(s) clone URL says on which port the web pages are; an SSH port does not.
    web = f"{scheme}://{authority}" if scheme in ("http", "https") else f"https://{host}"
    return f"{web}/{quote(_as_written(repo, path))}/{segment}/"


def _as_written(repo: str, normal: str) -> str:
    """The repository path with the owner's capitals (the normal form lowercases it)."""
    text = repo.strip()
    path = urlsplit(text).path if "://" in text else text.partition(":")[2]
    path = re.sub(r"/{2,}", "/", path).strip("/").removesuffix(".git").rstrip("/")
    return path if path.lower() == normal else normal


def commit_url(repo: str, revision: str) -> str | None:
    """The forge's page of `revision` in `repo`, or None (unknown host, not a SHA)."""
    prefix = commit_url_prefix(repo)
    if prefix is None or not _SHA.fullmatch(revision):
        return None
    return prefix + revision


@dataclass(frozen=True)
class Links:
    """The dashboard's own URLs: absolute under `public_url` when one is set (how people reach
    the daemon, perhaps through a proxy under a path), else relative to the host."""

    public_url: str = ""

    def to(self, path: str) -> str:
        return self.public_url.rstrip("/") + path

    def app(self, name: str) -> str:
        return self.to(f"/apps/{quote(name, safe='')}")

    def sync(self, name: str) -> str:
        return self.app(name) + "/sync"

    @property
    def origin(self) -> str | None:
        """`scheme://host[:port]` of public_url, which pages may load from and post to."""
        if not self.public_url:
            return None
        parts = urlsplit(self.public_url)
        return f"{parts.scheme.lower()}://{parts.netloc.lower()}" if parts.netloc else None
