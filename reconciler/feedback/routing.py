"""Which forge hears about an app, where its API is, and what the repository is called there.

An app's repository URL decides, in any spelling git accepts (https, ssh://, git@host:path,
with or without .git): a host of github.com, or the host of `[github].api_url`, is GitHub
(GitHub Enterprise serves its API at `https://HOST/api/v3` and its repositories on HOST);
gitlab.com or the host of `[gitlab].api_url` is GitLab. Anything else (file:// among them)
gets no commit statuses. A forge without a token file configured gets none either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from reconciler.config import AppConfig, Config
from reconciler.decisions.repourl import api_host, normalise_repo_url

Kind = Literal["github", "gitlab"]
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Forge:
    kind: Kind
    api_url: str
    project: str  # owner/repo on GitHub; group/.../project on GitLab; case as written
    token_file: Path

    @property
    def key(self) -> str:
        """Names the repository on its forge; a change of it means a fresh record."""
        return f"{self.kind}:{self.api_url}/{self.project.lower()}"


def route(app: AppConfig, config: Config) -> Forge | None:
    """The forge `app`'s repository lives on, or None when it gets no statuses."""
    try:
        normal = normalise_repo_url(app.repo)
    except ValueError:
        return None
    if normal.startswith("file:"):
        return None
    host = normal.split("/", 1)[0]
    project = project_path(app.repo)
    if not project:
        return None
    github, gitlab = config.github, config.gitlab
    if host in ("github.com", api_host(github.api_url)):
        if github.token_file is None or project.count("/") != 1:
            return None
        return Forge("github", github.api_url, project, github.token_file)
    if host in ("gitlab.com", api_host(gitlab.api_url)):
        if gitlab.token_file is None or "/" not in project:
            return None
        return Forge("gitlab", gitlab.api_url, project, gitlab.token_file)
    return None


def project_path(url: str) -> str:
    """The repository path of a git URL with its case kept: `Acme/Web` of
    `git@github.com:Acme/Web.git`. Empty when there is none."""
    text = url.strip()
    if _SCHEME.match(text):
        path = urlsplit(text).path
    else:
        _, _, path = text.partition(":")
    return re.sub(r"/{2,}", "/", path).strip("/").removesuffix(".git").strip("/")


def dashboard_url(config: Config, app: str) -> str:
    """The app's page on the dashboard, for links in statuses and messages."""
    base = config.daemon.public_url or f"http://{config.daemon.listen}"
    return f"{base.rstrip('/')}/apps/{app}"
