"""The git adapter against a private repository served by a real OpenSSH server on loopback.

Host keys are checked by libgit2 against `.ssh/known_hosts` in its home directory ($HOME
unless set otherwise), which is where the daemon's operator puts them; these tests point
that home directory at a scratch one for their duration.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest
from pygit2.enums import Option

from reconciler.adapters.git import GitMirrors, GitSource
from reconciler.errors import GitAuthError
from tests.support.gitrepo import Fetches, GitRepo, count_fetches
from tests.support.sshd import SshServer, generate_key, serve_git_over_ssh

# Generous: a wrong key must end in an error, and this bound is what tells that from a hang.
CALL_BOUND = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    root = tmp_path_factory.mktemp("ssh")
    with serve_git_over_ssh(root / "sshd", repos=root / "repos") as running:
        yield running


class KnownHosts:
    """The known_hosts file libgit2 consults; empty until a test trusts a host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def trust(self, server: SshServer, *, hashed: bool = False) -> None:
        self.path.write_text(server.known_hosts_line() + "\n")
        if hashed:
            subprocess.run(
                ["ssh-keygen", "-H", "-f", str(self.path)],
                check=True,
                capture_output=True,
                timeout=30,
            )
            assert str(server.port) not in self.path.read_text()  # really hashed

    def pin(self, server: SshServer, key: Path) -> None:
        """Record the public half of `key` as the server's host key."""
        public = " ".join(key.with_name(key.name + ".pub").read_text().split()[:2])
        self.path.write_text(f"[{server.host}]:{server.port} {public}\n")


@pytest.fixture
def known_hosts(tmp_path: Path) -> Iterator[KnownHosts]:
    """libgit2's home directory moved to a scratch one for this test only."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    before = pygit2.option(Option.GET_HOMEDIR)
    pygit2.option(Option.SET_HOMEDIR, str(home))
    yield KnownHosts(home / ".ssh" / "known_hosts")
    pygit2.option(Option.SET_HOMEDIR, before)


@pytest.fixture
def repo(server: SshServer, request: pytest.FixtureRequest) -> GitRepo:
    return GitRepo(server.repos / request.node.name)


@pytest.fixture
def mirrors(tmp_path: Path) -> Iterator[GitMirrors]:
    git = GitMirrors(tmp_path / "state", timeout=10, heads_ttl=0)
    yield git
    git.close()


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> Fetches:
    return count_fetches(monkeypatch)


def source(server: SshServer, repo: GitRepo, *, key: Path | None) -> GitSource:
    return GitSource(url=server.url(repo.remote), branch="main", ssh_key_file=key)


async def resolve(mirrors: GitMirrors, src: GitSource) -> str:
    return await asyncio.wait_for(mirrors.resolve(src), CALL_BOUND)


async def test_the_right_key_and_a_known_host_resolve_and_fetch(
    server: SshServer, repo: GitRepo, known_hosts: KnownHosts, mirrors: GitMirrors, fetches: Fetches
) -> None:
    """With the deploy key and the host in known_hosts, new commits are seen and fetched."""
    known_hosts.trust(server)
    first = repo.commit({"Dockerfile": "FROM scratch\n"})
    src = source(server, repo, key=server.client_key)

    assert await resolve(mirrors, src) == first
    second = repo.commit({"app.txt": "2"})
    assert await resolve(mirrors, src) == second
    assert fetches.count == 2
    tar = await mirrors.export_context(src, commit=second, context=".", dockerfile="Dockerfile")
    with tar:
        assert tar.read(512)  # the commit's objects arrived over SSH


async def test_a_hashed_known_hosts_entry_is_honoured(
    server: SshServer, repo: GitRepo, known_hosts: KnownHosts, mirrors: GitMirrors
) -> None:
    """known_hosts as OpenSSH writes it on Debian (HashKnownHosts yes) works too."""
    known_hosts.trust(server, hashed=True)
    head = repo.commit({"a.txt": "1"})

    assert await resolve(mirrors, source(server, repo, key=server.client_key)) == head


async def test_a_wrong_key_is_an_auth_error_not_a_hang(
    server: SshServer, repo: GitRepo, known_hosts: KnownHosts, mirrors: GitMirrors, tmp_path: Path
) -> None:
    """A key the server does not accept ends in GitAuthError (needs a human), promptly.

    The server allows many attempts (MaxAuthTries 30), so it is the adapter's own cap on
    repeated credential requests that ends the call, as it must with a lenient server.
    """
    known_hosts.trust(server)
    repo.commit({"a.txt": "1"})
    wrong = generate_key(tmp_path / "not-the-deploy-key")

    with pytest.raises(GitAuthError) as caught:
        await resolve(mirrors, source(server, repo, key=wrong))
    assert wrong.read_text() not in str(caught.value)


async def test_no_key_configured_is_an_auth_error(
    server: SshServer, repo: GitRepo, known_hosts: KnownHosts, mirrors: GitMirrors
) -> None:
    """A private repository over SSH without git_ssh_key_file fails as an auth problem."""
    known_hosts.trust(server)
    repo.commit({"a.txt": "1"})

    with pytest.raises(GitAuthError):
        await resolve(mirrors, source(server, repo, key=None))


async def test_an_unknown_host_key_is_an_auth_error(
    server: SshServer, repo: GitRepo, known_hosts: KnownHosts, mirrors: GitMirrors
) -> None:
    """A host missing from known_hosts is refused before any credential is offered."""
    repo.commit({"a.txt": "1"})
    logged_before = server.log.stat().st_size

    with pytest.raises(GitAuthError, match="unknown host key"):
        await resolve(mirrors, source(server, repo, key=server.client_key))
    assert b"Accepted publickey" not in server.log.read_bytes()[logged_before:]


async def test_a_changed_host_key_is_an_auth_error(
    server: SshServer, repo: GitRepo, known_hosts: KnownHosts, mirrors: GitMirrors, tmp_path: Path
) -> None:
    """A host whose key differs from the one in known_hosts (a possible impostor) is refused."""
    known_hosts.pin(server, generate_key(tmp_path / "impostor-host-key"))
    repo.commit({"a.txt": "1"})

    with pytest.raises(GitAuthError):
        await resolve(mirrors, source(server, repo, key=server.client_key))
