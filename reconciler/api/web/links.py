"""Where the dashboard's links point: its own pages (under `daemon.public_url` when set) and
the commit pages of the forges that host an app's repository.

Pure functions of the config: nothing is fetched or resolved.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from reconciler.config import Config
from reconciler.decisions.repourl import api_host, normalise_repo_url

__all__ = ["Links", "commit_url", "commit_url_prefix", "forge_hosts", "short_sha"]

_SHA = re.compile(r"[0-9a-f]{7,64}")
SHORT = 7  # as the forges show a commit

# Forges whose commit page is https://host/<owner>/<repo>/<segment>/<sha>. Self-hosted GitHub
# Enterprise and GitLab live on the host of `[github].api_url` or `[gitlab].api_url` (the
# rule commit statuses follow), or usually on a host named github.* or gitlab*.*; anything
# else is shown as text, since a guessed link that 404s is worse than none.
_KNOWN_HOSTS = {
    "github.com": "commit",
    "gitlab.com": "commit",
    "codeberg.org": "commit",
    "bitbucket.org": "commits",
}
_SELF_HOSTED = re.compile(r"^(github|gitlab)[a-z0-9-]*\.")


def short_sha(revision: str) -> str:
    return revision[:SHORT] if _SHA.fullmatch(revision) else revision


def forge_hosts(config: Config) -> frozenset[str]:
    """The hosts (`host[:port]`) the config names a GitHub or GitLab on."""
    return frozenset(
        h for h in (api_host(config.github.api_url), api_host(config.gitlab.api_url)) if h
    )


def commit_url_prefix(repo: str, forges: Collection[str] = ()) -> str | None:
    """The commit page of `repo` up to the SHA (`https://github.com/acme/web/commit/`), or
    None where the repository is local or not on a forge we know. `forges` are the hosts
    (`host[:port]`) the config names a forge on."""
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
    segment = _KNOWN_HOSTS.get(host) or (
        "commit" if authority in forges or _SELF_HOSTED.match(host) else None
    )
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


def commit_url(repo: str, revision: str, forges: Collection[str] = ()) -> str | None:
    """The forge's page of `revision` in `repo`, or None (unknown host, not a SHA)."""
    prefix = commit_url_prefix(repo, forges)
    if prefix is None or not _SHA.fullmatch(revision):
        return None
    return prefix + revision


@dataclass(frozen=True)
class Links:
    """The dashboard's own URLs: absolute under `public_url` when one is set (how people reach
    the daemon, perhaps through a proxy under a path), else relative to the host."""

    public_url: str = ""
    forges: frozenset[str] = frozenset()  # hosts the config names a forge on (forge_hosts)

    @classmethod
    def of(cls, config: Config) -> Links:
        return cls(config.daemon.public_url, forge_hosts(config))

    def commit(self, repo: str, revision: str) -> str | None:
        return commit_url(repo, revision, self.forges)

    def commit_prefix(self, repo: str) -> str | None:
        return commit_url_prefix(repo, self.forges)

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
