"""A real git remote for tests: a bare repository plus a work tree that pushes to it.

Driven by the `git` CLI, so tests exercise the adapter against repositories made the way
developers make them. Commits get increasing fixed dates and a fixed identity, and the
user's own git config is ignored, so runs are reproducible.

    repo = GitRepo(tmp_path / "app")
    first = repo.commit({"Dockerfile": "FROM scratch\\n"}, "initial")
    GitSource(url=repo.url, branch="main")
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.adapters import git as git_module

_EPOCH = 1_700_000_000


class GitRepo:
    """A bare repository at `root/remote.git`, edited through the work tree at `root/work`.

    Every commit is pushed at once, so the bare repository is what a daemon would poll.
    """

    def __init__(self, root: Path, *, branch: str = "main") -> None:
        self.root = root
        self.remote = root / "remote.git"
        self.work = root / "work"
        self.default_branch = branch
        self._clock = 0
        root.mkdir(parents=True, exist_ok=True)
        self._git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(self.remote))
        self._git("init", "--quiet", f"--initial-branch={branch}", str(self.work))
        self.git("remote", "add", "origin", str(self.remote))

    @property
    def url(self) -> str:
        """The remote as a file:// URL."""
        return self.remote.as_uri()

    def git(self, *args: str) -> str:
        """Run git in the work tree and return its stripped stdout."""
        return self._git("-C", str(self.work), *args)

    def remote_git(self, *args: str) -> str:
        """Run git in the bare remote (for changes no push can make, e.g. `gc`)."""
        return self._git("-C", str(self.remote), *args)

    def commit(
        self,
        files: Mapping[str, str | bytes | None],
        message: str = "change",
        *,
        branch: str | None = None,
        executable: Iterable[str] = (),
        symlinks: Mapping[str, str] | None = None,
        push: bool = True,
    ) -> str:
        """Write `files` (None deletes), commit everything and push; return the commit SHA.

        `branch` switches to (creating if needed) that branch first. `executable` names
        files to mark 0755, `symlinks` maps link paths to their targets.
        """
        if branch is not None:
            self.checkout(branch)
        for name, content in files.items():
            path = self.work / name
            if content is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                path.unlink()
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        for name in executable:
            (self.work / name).chmod(0o755)
        for name, target in (symlinks or {}).items():
            link = self.work / name
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        if push:
            self.push()
        return self.head()

    def checkout(self, branch: str, *, start: str | None = None) -> None:
        """Switch the work tree to `branch`, creating it (from `start` or HEAD) if needed."""
        existing = self.git("branch", "--list", branch)
        if existing:
            self.git("checkout", "--quiet", branch)
        else:
            self.git("checkout", "--quiet", "-b", branch, *([start] if start else []))

    def merge(self, branch: str, message: str = "merge", *, into: str | None = None) -> str:
        """Merge `branch` with a merge commit (never fast-forward), push, return its SHA."""
        self.checkout(into or self.default_branch)
        self.git("merge", "--quiet", "--no-ff", "-m", message, branch)
        self.push()
        return self.head()

    def push(self, branch: str | None = None) -> None:
        """Push the current (or the named) branch to the remote, forcing."""
        ref = branch or self.git("rev-parse", "--abbrev-ref", "HEAD")
        self.git("push", "--quiet", "--force", "origin", f"{ref}:refs/heads/{ref}")

    def tag(self, name: str, ref: str = "HEAD", *, message: str | None = None) -> str:
        """Create and push a tag (annotated when `message` is given); return the commit."""
        if message is None:
            self.git("tag", "--force", name, ref)
        else:
            self.git("tag", "--force", "-a", name, "-m", message, ref)
        self.git("push", "--quiet", "--force", "origin", f"refs/tags/{name}")
        return self.git("rev-parse", f"{name}^{{commit}}")

    def delete_branch(self, name: str) -> None:
        """Delete `name` on the remote (and locally, unless it is checked out)."""
        self.git("push", "--quiet", "origin", "--delete", name)
        if self.git("rev-parse", "--abbrev-ref", "HEAD") != name:
            self.git("branch", "--quiet", "-D", name)

    def head(self, ref: str = "HEAD") -> str:
        """The full SHA of `ref` in the work tree."""
        return self.git("rev-parse", ref)

    def remote_head(self, branch: str | None = None) -> str:
        """The full SHA the remote's `branch` points at."""
        return self.remote_git("rev-parse", f"refs/heads/{branch or self.default_branch}")

    def _git(self, *args: str) -> str:
        self._clock += 1
        stamp = f"{_EPOCH + self._clock} +0000"
        env = {
            **os.environ,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Test Author",
            "GIT_AUTHOR_EMAIL": "author@example.com",
            "GIT_COMMITTER_NAME": "Test Author",
            "GIT_COMMITTER_EMAIL": "author@example.com",
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_DATE": stamp,
        }
        done = subprocess.run(["git", *args], capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()


@dataclass
class Fetches:
    """The fetches GitMirrors made from the remotes, counted at the network call itself."""

    count: int = 0
    refspecs: list[list[str]] = field(default_factory=list)  # what each fetch asked for


def count_fetches(monkeypatch: pytest.MonkeyPatch) -> Fetches:
    """From now on until the test ends, every fetch GitMirrors makes is counted."""
    fetches = Fetches()
    real = git_module._fetch

    def fetch(remote: pygit2.Remote, callbacks: Any, refspecs: list[str]) -> None:
        fetches.count += 1
        fetches.refspecs.append(refspecs)
        real(remote, callbacks, refspecs)

    monkeypatch.setattr(git_module, "_fetch", fetch)
    return fetches
