"""The git adapter against real repositories: file:// remotes and a smart-HTTP server."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.adapters.git import GitMirrors, GitSource
from reconciler.decisions.repourl import redact_url
from reconciler.errors import BranchEmpty, GitAuthError, GitRevisionNotFound, GitUnavailable
from tests.support.gitrepo import Fetches, GitRepo, count_fetches

TOKEN = "s3cr3t-token-value"


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "app")


@pytest.fixture
def mirrors(tmp_path: Path) -> Iterator[GitMirrors]:
    # heads_ttl=0: every resolve asks the remote, as a pass after a new push would.
    git = GitMirrors(tmp_path / "state", timeout=10, heads_ttl=0)
    yield git
    git.close()


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> Fetches:
    return count_fetches(monkeypatch)


def source(repo: GitRepo, **fields: object) -> GitSource:
    return GitSource(url=repo.url, **{"branch": "main", **fields})  # type: ignore[arg-type]


# --- branch heads and the cost rule ------------------------------------------------------


async def test_branch_head_is_the_desired_revision(repo: GitRepo, mirrors: GitMirrors) -> None:
    """Without pin or paths, the desired revision is the branch head."""
    repo.commit({"a.txt": "1"})
    head = repo.commit({"a.txt": "2"})
    other = repo.commit({"b.txt": "x"}, branch="other")

    assert await mirrors.resolve(source(repo)) == head
    assert await mirrors.resolve(source(repo, branch="other")) == other


async def test_a_new_commit_is_seen(repo: GitRepo, mirrors: GitMirrors, fetches: Fetches) -> None:
    """A push after the last pass changes the desired revision on the next one."""
    repo.commit({"a.txt": "1"})
    await mirrors.resolve(source(repo))
    newer = repo.commit({"a.txt": "2"})

    assert await mirrors.resolve(source(repo)) == newer
    assert fetches.count == 2


async def test_no_fetch_while_the_heads_are_unchanged(
    repo: GitRepo, mirrors: GitMirrors, fetches: Fetches
) -> None:
    """When the remote head is already mirrored, a pass costs one ls-remote and no fetch."""
    head = repo.commit({"a.txt": "1"})
    for _ in range(3):
        assert await mirrors.resolve(source(repo)) == head

    assert fetches.count == 1
    assert mirrors.ls_remote_count == 3


async def test_concurrent_apps_on_one_repository_fetch_once(
    repo: GitRepo, tmp_path: Path, fetches: Fetches
) -> None:
    """Two apps tracking one repository share the ls-remote and the fetch."""
    head = repo.commit({"svc/a/x": "1", "svc/b/y": "1"})
    git = GitMirrors(tmp_path / "state")
    apps = [source(repo, paths=("svc/a",)), source(repo, paths=("svc/b",))]

    assert await asyncio.gather(*(git.resolve(app) for app in apps)) == [head, head]
    assert fetches.count == 1
    assert git.ls_remote_count == 1


async def test_heads_are_reused_within_their_ttl(repo: GitRepo, tmp_path: Path) -> None:
    """Within `heads_ttl` an answer is reused; forget_heads makes the next call ask again."""
    repo.commit({"a.txt": "1"})
    git = GitMirrors(tmp_path / "state", heads_ttl=3600)
    await git.remote_heads(source(repo))
    await git.remote_heads(source(repo))
    assert git.ls_remote_count == 1

    newer = repo.commit({"a.txt": "2"})
    git.forget_heads(repo.url)
    assert (await git.remote_heads(source(repo)))["refs/heads/main"] == newer
    assert git.ls_remote_count == 2


async def test_a_deleted_branch_is_not_found(repo: GitRepo, mirrors: GitMirrors) -> None:
    """A branch gone from the remote is GitRevisionNotFound, even though it is mirrored."""
    repo.commit({"a.txt": "1"})
    repo.commit({"b.txt": "1"}, branch="feature")
    await mirrors.resolve(source(repo, branch="feature"))
    repo.checkout("main")
    repo.delete_branch("feature")

    with pytest.raises(GitRevisionNotFound, match="branch 'feature' not found"):
        await mirrors.resolve(source(repo, branch="feature"))


async def test_a_repository_with_no_commit_yet_is_branch_empty_until_its_first_push(
    repo: GitRepo, mirrors: GitMirrors
) -> None:
    """Created and never pushed to: nothing wrong, a wait; its first push is resolved."""
    with pytest.raises(BranchEmpty, match=r"branch 'main' of file://.* has no commit yet"):
        await mirrors.resolve(source(repo))
    with pytest.raises(BranchEmpty):
        await mirrors.resolve(source(repo, paths=("web/",)))
    first = repo.commit({"a.txt": "1"})
    assert await mirrors.resolve(source(repo)) == first


async def test_a_branch_missing_beside_others_is_not_found_not_empty(
    repo: GitRepo, mirrors: GitMirrors
) -> None:
    repo.commit({"a.txt": "1"})
    with pytest.raises(GitRevisionNotFound, match="branch 'release' not found"):
        await mirrors.resolve(source(repo, branch="release"))


async def test_a_deleted_or_damaged_mirror_is_rebuilt(
    repo: GitRepo, mirrors: GitMirrors, fetches: Fetches
) -> None:
    """The mirrors are a cache: state_dir may be deleted, and a broken mirror starts over."""
    head = repo.commit({"a.txt": "1"})
    await mirrors.resolve(source(repo))
    shutil.rmtree(mirrors.root)
    assert await mirrors.resolve(source(repo)) == head

    shutil.rmtree(mirrors.mirror_path(repo.url) / "objects")
    assert await mirrors.resolve(source(repo)) == head
    assert fetches.count == 3


# --- pins -------------------------------------------------------------------------------


async def test_pin_by_full_sha_needs_no_remote_once_mirrored(
    repo: GitRepo, mirrors: GitMirrors, fetches: Fetches
) -> None:
    """A full SHA names an immutable commit: after one fetch it resolves without the remote."""
    old = repo.commit({"a.txt": "1"})
    repo.commit({"a.txt": "2"})

    assert await mirrors.resolve(source(repo, revision=old)) == old
    assert await mirrors.resolve(source(repo, revision=old)) == old
    assert fetches.count == 1
    assert mirrors.ls_remote_count == 0


async def test_pin_by_tag_peels_to_the_commit(repo: GitRepo, mirrors: GitMirrors) -> None:
    """Lightweight and annotated tags resolve to the commit they point at."""
    first = repo.commit({"a.txt": "1"})
    second = repo.commit({"a.txt": "2"})
    repo.commit({"a.txt": "3"})
    repo.tag("v1", first)
    repo.tag("v2", second, message="release 2")

    assert await mirrors.resolve(source(repo, revision="v1")) == first
    assert await mirrors.resolve(source(repo, revision="v2")) == second


async def test_a_moved_tag_is_followed(repo: GitRepo, mirrors: GitMirrors) -> None:
    """The remote's tag is the truth: re-pointing it changes the desired revision."""
    first = repo.commit({"a.txt": "1"})
    repo.tag("stable", first)
    assert await mirrors.resolve(source(repo, revision="stable")) == first

    second = repo.commit({"a.txt": "2"})
    repo.tag("stable", second)
    assert await mirrors.resolve(source(repo, revision="stable")) == second


async def test_a_pin_that_is_both_a_tag_and_an_abbreviated_commit_is_refused(
    repo: GitRepo, mirrors: GitMirrors
) -> None:
    """A tag spelt like another commit's abbreviated SHA could swap what deploys: refused,
    naming both readings; a tag on the very commit it spells is no ambiguity."""
    first = repo.commit({"a.txt": "1"})
    second = repo.commit({"a.txt": "2"})
    short = first[:10]
    repo.tag(short, second)  # the tag says `second`, the digits say `first`
    await mirrors.resolve(source(repo))  # the mirror has both commits
    with pytest.raises(GitRevisionNotFound, match="both a tag and an abbreviated commit"):
        await mirrors.resolve(source(repo, revision=short))
    own = second[:10]
    repo.tag(own, second)
    assert await mirrors.resolve(source(repo, revision=own)) == second


async def test_pin_by_abbreviated_sha(repo: GitRepo, mirrors: GitMirrors) -> None:
    """An abbreviated SHA resolves to the full 40-hex SHA."""
    old = repo.commit({"a.txt": "1"})
    repo.commit({"a.txt": "2"})

    assert await mirrors.resolve(source(repo, revision=old[:8])) == old


@pytest.mark.parametrize("pin", ["0" * 40, "deadbeef", "v9.9.9"])
async def test_an_unknown_pin_is_not_found(repo: GitRepo, mirrors: GitMirrors, pin: str) -> None:
    """A pin naming no commit or tag is GitRevisionNotFound, naming the pin."""
    repo.commit({"a.txt": "1"})

    with pytest.raises(GitRevisionNotFound, match=pin):
        await mirrors.resolve(source(repo, revision=pin))


# --- only the tracked refs are fetched ------------------------------------------------
# Over smart HTTP where objects matter: libgit2 copies every object of a file:// remote
# whatever a fetch asks for, so only refs tell there.


def other_refs(repo: GitRepo, count: int) -> list[str]:
    """`count` branches (other-N) and as many tags (t-N), each on a commit of its own off
    main holding 64 KiB no other commit has; written into the remote with pygit2, as a
    busy repository's pull-request branches and release tags would be. Their commits."""
    remote = pygit2.Repository(str(repo.remote))
    main = remote.references["refs/heads/main"].target
    who = pygit2.Signature("Other Author", "other@example.com", 1_700_000_000, 0)
    made = []
    for n in range(count):
        blob = remote.create_blob(n.to_bytes(4, "big") * 16384)
        builder = remote.TreeBuilder(remote[main].peel(pygit2.Commit).tree)
        builder.insert(f"other-{n}.bin", blob, pygit2.enums.FileMode.BLOB)
        commit = remote.create_commit(None, who, who, f"other {n}", builder.write(), [main])
        remote.references.create(f"refs/heads/other-{n}", commit)
        remote.references.create(f"refs/tags/t-{n}", commit)
        made.append(str(commit))
    return made


@pytest.fixture
def over_http(http_remote: str, tmp_path: Path) -> Callable[..., GitSource]:
    """Sources on the repository served over smart HTTP, with the token they need."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")

    def make(**fields: Any) -> GitSource:
        return GitSource(url=http_remote, token_file=token_file, **{"branch": "main", **fields})

    return make


def mirror(mirrors: GitMirrors, url: str) -> pygit2.Repository:
    return pygit2.Repository(str(mirrors.mirror_path(url)))


def mirrored_refs(mirrors: GitMirrors, url: str) -> set[str]:
    names = mirror(mirrors, url).references
    return {name for name in names if name.startswith(("refs/heads/", "refs/tags/"))}


async def test_only_the_tracked_branch_is_fetched_of_fifty_others_and_their_tags(
    repo: GitRepo, mirrors: GitMirrors, over_http: Callable[..., GitSource]
) -> None:
    """A remote with 50 other branches and 50 tags: the mirror gets main and nothing of
    theirs, not a ref and not an object; nor the ref of a tag on main."""
    head = repo.commit({"a.txt": "1"})
    repo.tag("v1.0", head, message="on main")
    others = other_refs(repo, 50)
    app = over_http()
    mirrors.track([app])

    assert await mirrors.resolve(app) == head

    assert mirrored_refs(mirrors, app.url) == {"refs/heads/main"}
    assert [commit for commit in others if commit in mirror(mirrors, app.url)] == []


async def test_apps_sharing_a_mirror_fetch_their_branches_and_pinned_tags(
    repo: GitRepo, mirrors: GitMirrors, over_http: Callable[..., GitSource]
) -> None:
    """Three apps on one repository: on main, on another branch, and pinned to a tag off
    both. The mirror holds those three refs and the commits they need, no other."""
    head = repo.commit({"a.txt": "1"})
    others = other_refs(repo, 50)
    apps = [over_http(), over_http(branch="other-7"), over_http(revision="t-9")]
    mirrors.track(apps)

    assert [await mirrors.resolve(app) for app in apps] == [head, others[7], others[9]]

    url = apps[0].url
    assert mirrored_refs(mirrors, url) == {"refs/heads/main", "refs/heads/other-7", "refs/tags/t-9"}
    assert [n for n, commit in enumerate(others) if commit in mirror(mirrors, url)] == [7, 9]


async def test_a_commit_pin_is_found_through_its_branch(
    repo: GitRepo, mirrors: GitMirrors, over_http: Callable[..., GitSource]
) -> None:
    """A pinned commit is fetched with the branch it is on; a commit only another branch
    holds is not found unless the app names that branch."""
    old = repo.commit({"a.txt": "1"})
    repo.commit({"a.txt": "2"})
    others = other_refs(repo, 2)

    assert await mirrors.resolve(over_http(revision=old[:12])) == old
    with pytest.raises(GitRevisionNotFound, match=others[1][:12]):
        await mirrors.resolve(over_http(revision=others[1][:12]))
    assert await mirrors.resolve(over_http(branch="other-1", revision=others[1])) == others[1]


async def test_a_branch_added_to_the_config_is_fetched_and_one_dropped_goes(
    repo: GitRepo,
    mirrors: GitMirrors,
    fetches: Fetches,
    over_http: Callable[..., GitSource],
) -> None:
    """A config edit that adds an app on another branch: its branch is fetched at its
    first pass. An edit that drops main: main's ref leaves the mirror at the next fetch."""
    head = repo.commit({"a.txt": "1"})
    others = other_refs(repo, 3)
    main, other = over_http(), over_http(branch="other-1")
    mirrors.track([main])
    assert await mirrors.resolve(main) == head
    assert mirrored_refs(mirrors, main.url) == {"refs/heads/main"}

    mirrors.track([main, other])
    assert await mirrors.resolve(other) == others[1]
    assert mirrored_refs(mirrors, main.url) == {"refs/heads/main", "refs/heads/other-1"}
    assert fetches.refspecs[-1] == [
        "+refs/heads/main:refs/heads/main",
        "+refs/heads/other-1:refs/heads/other-1",
    ]

    mirrors.track([other])
    newer = repo.commit({"b.txt": "2"}, branch="other-1")
    assert await mirrors.resolve(other) == newer
    assert mirrored_refs(mirrors, main.url) == {"refs/heads/other-1"}


async def test_a_tracked_branch_deleted_on_the_remote_leaves_the_mirror(
    repo: GitRepo, mirrors: GitMirrors
) -> None:
    """The remote is the truth for refs too: a deleted branch is pruned at the next fetch."""
    repo.commit({"a.txt": "1"})
    feature = repo.commit({"f.txt": "1"}, branch="feature")
    apps = [source(repo), source(repo, branch="feature")]
    mirrors.track(apps)
    assert await mirrors.resolve(apps[1]) == feature
    repo.checkout("main")
    repo.delete_branch("feature")

    newer = repo.commit({"a.txt": "2"})
    assert await mirrors.resolve(apps[0]) == newer

    assert mirrored_refs(mirrors, repo.url) == {"refs/heads/main"}
    with pytest.raises(GitRevisionNotFound, match="branch 'feature' not found"):
        await mirrors.resolve(apps[1])


# --- paths (monorepo) -------------------------------------------------------------------


async def test_paths_pick_the_newest_commit_touching_them(
    repo: GitRepo, mirrors: GitMirrors
) -> None:
    """Only commits touching a path (as a directory prefix) change the desired revision."""
    touch_a = repo.commit({"svc/a/main.py": "1", "svc/b/main.py": "1"})
    repo.commit({"svc/b/main.py": "2"}, "other service")
    repo.commit({"svc/ab/main.py": "1"}, "a sibling whose name starts the same")
    app = source(repo, paths=("svc/a",))
    assert await mirrors.resolve(app) == touch_a

    nested = repo.commit({"svc/a/lib/util.py": "1"})
    assert await mirrors.resolve(app) == nested

    repo.commit({"docs/readme.md": "x"}, "elsewhere")
    assert await mirrors.resolve(app) == nested


async def test_paths_see_deletions_modes_and_several_paths(
    repo: GitRepo, mirrors: GitMirrors
) -> None:
    """Deleting a file and chmod +x count as touching; any of several paths counts."""
    repo.commit({"svc/a/run.sh": "echo", "lib/x.py": "1", "docs/y": "1"})
    chmod = repo.commit({}, "make it executable", executable=["svc/a/run.sh"])
    assert await mirrors.resolve(source(repo, paths=("svc/a/run.sh",))) == chmod

    deletion = repo.commit({"lib/x.py": None}, "drop x")
    repo.commit({"docs/y": "2"})
    assert await mirrors.resolve(source(repo, paths=("svc/a", "lib/"))) == deletion


async def test_paths_count_a_merge_as_the_change(repo: GitRepo, mirrors: GitMirrors) -> None:
    """On the first-parent chain, a merge bringing a change onto the branch is that change."""
    repo.commit({"svc/a/x": "1", "docs/d": "1"})
    repo.commit({"svc/a/x": "2"}, branch="feature")
    repo.checkout("main")
    repo.commit({"docs/d": "2"})
    merge = repo.merge("feature")
    repo.commit({"docs/d": "3"})

    assert await mirrors.resolve(source(repo, paths=("svc/a",))) == merge


async def test_paths_touched_by_no_commit_are_not_found(repo: GitRepo, mirrors: GitMirrors) -> None:
    repo.commit({"a.txt": "1"})

    with pytest.raises(GitRevisionNotFound, match="no commit on branch 'main' touches"):
        await mirrors.resolve(source(repo, paths=("svc/missing",)))


# --- unreachable remotes, timeouts, credentials -----------------------------------------


@pytest.mark.parametrize(
    "url",
    ["file:///nonexistent/repo.git", "https://127.0.0.1:1/repo.git", "http://127.0.0.1:1/r.git"],
)
async def test_an_unreachable_remote_is_unavailable(mirrors: GitMirrors, url: str) -> None:
    """A missing path or a refused connection is transient, not a stalled revision."""
    with pytest.raises(GitUnavailable):
        await mirrors.resolve(GitSource(url=url, branch="main"))


async def test_a_silent_server_times_out(tmp_path: Path) -> None:
    """A server that accepts and never answers ends in GitUnavailable, not a hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        git = GitMirrors(tmp_path / "state", timeout=0.5)
        app = GitSource(url=f"http://127.0.0.1:{port}/repo.git", branch="main")

        with pytest.raises(GitUnavailable):
            await git.resolve(app)
        git.close()


async def test_credentials_in_urls_never_reach_messages(mirrors: GitMirrors) -> None:
    """Userinfo in a URL is stripped from the error and from the error it chains."""
    app = GitSource(url="http://deploy:hunter2@127.0.0.1:1/repo.git", branch="main")

    with pytest.raises(GitUnavailable) as caught:
        await mirrors.resolve(app)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in str(caught.value.__cause__)
    assert redact_url(app.url) == "http://127.0.0.1:1/repo.git"
    assert redact_url("git@github.com:acme/web.git") == "git@github.com:acme/web.git"


class _GitHttpHandler(BaseHTTPRequestHandler):
    """Smart HTTP through `git http-backend`, with Basic auth when the server has a token."""

    server: _GitHttpServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self) -> None:
        expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self._body()
        env = {
            "GIT_PROJECT_ROOT": str(self.server.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "REMOTE_ADDR": "127.0.0.1",
            "PATH": "/usr/bin:/bin:/usr/local/bin",
        }
        answer = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        ).stdout
        head, _, payload = answer.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)


class _GitHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    project_root: Path


@pytest.fixture
def http_remote(repo: GitRepo) -> Iterator[str]:
    """The repo's remote served over HTTP on loopback, requiring TOKEN."""
    server = _GitHttpServer(("127.0.0.1", 0), _GitHttpHandler)
    server.project_root = repo.root
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/remote.git"
    server.shutdown()
    server.server_close()


async def test_a_token_file_authenticates_over_https(
    repo: GitRepo, mirrors: GitMirrors, http_remote: str, tmp_path: Path
) -> None:
    """The token is read from its file and sent as the password of x-access-token."""
    head = repo.commit({"a.txt": "1"})
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")

    app = GitSource(url=http_remote, branch="main", token_file=token_file)
    assert await mirrors.resolve(app) == head


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_a_refused_credential_is_an_auth_error(
    repo: GitRepo, mirrors: GitMirrors, http_remote: str, tmp_path: Path, token: str | None
) -> None:
    """No token, or a wrong one, stalls the app with GitAuthError; the token is not shown."""
    repo.commit({"a.txt": "1"})
    token_file = None
    if token is not None:
        token_file = tmp_path / "token"
        token_file.write_text(token)

    with pytest.raises(GitAuthError) as caught:
        await mirrors.resolve(GitSource(url=http_remote, branch="main", token_file=token_file))
    assert "wrong-token" not in str(caught.value)
    assert "wrong-token" not in str(caught.value.__cause__ or "")


async def test_an_unreadable_token_file_is_an_auth_error(
    repo: GitRepo, mirrors: GitMirrors, http_remote: str, tmp_path: Path
) -> None:
    app = GitSource(url=http_remote, branch="main", token_file=tmp_path / "missing")

    with pytest.raises(GitAuthError, match="cannot read git token file"):
        await mirrors.resolve(app)
