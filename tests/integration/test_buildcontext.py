"""Build contexts written from commit trees: contents, .dockerignore, determinism, bounds."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import BinaryIO

import pygit2
import pytest

from reconciler.adapters.buildcontext import ContextLimits, write_context_tar
from reconciler.adapters.git import GitMirrors, GitSource
from reconciler.errors import BuildContextRefused, BuildFailed, ManifestError
from tests.support.gitrepo import GitRepo
from tests.support.memory import PeakRss, rss_kib


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "app")


def context_tar(
    repo: GitRepo,
    commit: str,
    *,
    context: str = ".",
    dockerfile: str = "Dockerfile",
    limits: ContextLimits | None = None,
    out: io.BytesIO | None = None,
) -> bytes:
    out = out if out is not None else io.BytesIO()
    written = write_context_tar(
        pygit2.Repository(str(repo.remote)),
        commit,
        context=context,
        dockerfile=dockerfile,
        out=out,
        limits=limits,
    )
    assert written == len(out.getvalue())
    return out.getvalue()


def members(tar_bytes: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return {m.name: m for m in tar.getmembers()}


def read(tar_bytes: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        extracted = tar.extractfile(name)
        assert extracted is not None
        return extracted.read()


def test_the_context_holds_the_committed_files(repo: GitRepo) -> None:
    """Files, modes, symlinks and directories under the context; nothing outside it."""
    commit = repo.commit(
        {
            "app/Dockerfile": "FROM scratch\n",
            "app/src/main.py": "print('hi')\n",
            "app/run.sh": "#!/bin/sh\n",
            "other/secret.txt": "not for this image",
        },
        executable=["app/run.sh"],
        symlinks={"app/current": "src/main.py"},
    )

    tar = context_tar(repo, commit, context="app")
    found = members(tar)

    assert set(found) == {"Dockerfile", "src", "src/main.py", "run.sh", "current"}
    assert found["run.sh"].mode == 0o755
    assert found["src/main.py"].mode == 0o644
    assert found["src"].isdir()
    assert found["current"].issym()
    assert found["current"].linkname == "src/main.py"
    assert read(tar, "src/main.py") == b"print('hi')\n"
    assert {m.mtime for m in found.values()} == {0}
    assert {(m.uid, m.gid) for m in found.values()} == {(0, 0)}


def test_dockerignore_is_honoured(repo: GitRepo) -> None:
    """Docker's rules: root-relative `*`, `**`, `?`, leading `/`, trailing `/`, `!`, comments."""
    ignore = "\n".join(
        [
            "# a comment; the next line is blank",
            "",
            "*.log",
            "**/*.tmp",
            "/secret.txt",
            "build/",
            "!build/keep.txt",
            "docs",
            "?.md",
            "Dockerfile",
            ".dockerignore",
        ]
    )
    files = {
        ".dockerignore": ignore,
        "Dockerfile": "FROM scratch\n",
        "app.log": "x",
        "sub/app.log": "kept: * does not cross a slash",
        "a.tmp": "x",
        "sub/deep/b.tmp": "x",
        "secret.txt": "x",
        "sub/secret.txt": "kept: the leading slash anchors at the root",
        "build/out.bin": "x",
        "build/keep.txt": "kept by the exception",
        "docs/guide/x.md": "x",
        "a.md": "x",
        "ab.md": "kept: ? is one character",
        "# a comment; the next line is blank": "kept: only lines are comments",
    }
    commit = repo.commit(files)

    found = set(members(context_tar(repo, commit)))

    assert found == {
        ".dockerignore",
        "Dockerfile",
        "sub",
        "sub/app.log",
        "sub/deep",
        "sub/secret.txt",
        "build",
        "build/keep.txt",
        "ab.md",
        "# a comment; the next line is blank",
    }


def test_a_dockerfile_in_an_ignored_directory_is_still_sent(repo: GitRepo) -> None:
    commit = repo.commit(
        {".dockerignore": "docker\n", "docker/Dockerfile": "FROM scratch\n", "docker/x": "x"}
    )

    found = set(members(context_tar(repo, commit, dockerfile="docker/Dockerfile")))

    assert found == {".dockerignore", "docker", "docker/Dockerfile"}


def test_the_same_tree_gives_the_same_bytes(repo: GitRepo) -> None:
    """Byte-identical tars for one tree, also from a later commit that changed other paths."""
    first = repo.commit({"app/Dockerfile": "FROM scratch\n", "app/x": "1", "docs/y": "1"})
    later = repo.commit({"docs/y": "2"})

    tar = context_tar(repo, first, context="app")

    assert tar == context_tar(repo, first, context="app")
    assert tar == context_tar(repo, later, context="app")
    assert tar != context_tar(repo, later, context=".", dockerfile="app/Dockerfile")


@pytest.mark.parametrize(
    ("context", "dockerfile", "message"),
    [
        ("../elsewhere", "Dockerfile", "build context '../elsewhere' contains '..'"),
        ("app/../..", "Dockerfile", "build context 'app/../..' contains '..'"),
        ("/etc", "Dockerfile", "build context '/etc' is an absolute path"),
        ("app", "../Dockerfile", "dockerfile '../Dockerfile' contains '..'"),
        ("app", "/Dockerfile", "dockerfile '/Dockerfile' is an absolute path"),
        ("missing", "Dockerfile", "build context 'missing' is not a directory"),
        ("app/Dockerfile", "Dockerfile", "build context 'app/Dockerfile' is not a directory"),
        ("app", "Nope.dockerfile", "dockerfile 'Nope.dockerfile' not found"),
        ("app", "sub", "dockerfile 'sub' is not a file"),
    ],
)
def test_bad_context_or_dockerfile_paths_are_refused(
    repo: GitRepo, context: str, dockerfile: str, message: str
) -> None:
    commit = repo.commit(
        {"Dockerfile": "FROM scratch\n", "app/Dockerfile": "FROM scratch\n", "app/sub/x": "x"}
    )

    with pytest.raises(ManifestError, match=message.replace("..", r"\.\.")):
        context_tar(repo, commit, context=context, dockerfile=dockerfile)


def test_a_dockerfile_symlinked_outside_the_context_is_refused(repo: GitRepo) -> None:
    """A Dockerfile pointing out of the context cannot be built; one inside can."""
    commit = repo.commit(
        {"shared/Dockerfile": "FROM scratch\n", "app/docker/real": "FROM scratch\n"},
        symlinks={"app/Dockerfile": "../shared/Dockerfile", "app/Inside": "docker/real"},
    )

    with pytest.raises(ManifestError, match="pointing outside the build context"):
        context_tar(repo, commit, context="app")
    found = members(context_tar(repo, commit, context="app", dockerfile="Inside"))
    assert found["Inside"].issym()
    assert "docker/real" in found


def test_a_context_symlinked_outside_the_repository_is_refused(repo: GitRepo) -> None:
    """A context path may go through a symlink within the repository, never out of it."""
    commit = repo.commit(
        {"services/web/Dockerfile": "FROM scratch\n"},
        symlinks={"web": "services/web", "escape": "../../etc", "abs": "/etc"},
    )

    assert "Dockerfile" in members(context_tar(repo, commit, context="web"))
    for context in ("escape", "abs"):
        with pytest.raises(ManifestError, match="pointing outside the repository"):
            context_tar(repo, commit, context=context)


async def test_export_uses_the_commit_tree_not_a_working_copy(
    repo: GitRepo, tmp_path: Path
) -> None:
    """An older commit exports its own content, whatever the work tree holds."""
    old = repo.commit({"Dockerfile": "FROM scratch\n", "version.txt": "1"})
    new = repo.commit({"version.txt": "2"})
    (repo.work / "version.txt").write_text("uncommitted")
    (repo.work / "untracked.txt").write_text("never committed")
    git = GitMirrors(tmp_path / "state")
    app = GitSource(url=repo.url, branch="main")

    exported = {}
    for commit in (old, new):
        with await git.export_context(
            app, commit=commit, context=".", dockerfile="Dockerfile"
        ) as context:
            exported[commit] = context.read()

    assert read(exported[old], "version.txt") == b"1"
    assert read(exported[new], "version.txt") == b"2"
    assert "untracked.txt" not in members(exported[new])


async def test_export_is_byte_identical_across_mirrors(repo: GitRepo, tmp_path: Path) -> None:
    """Two daemons (two state dirs) send Docker the same bytes for one commit."""
    commit = repo.commit({"Dockerfile": "FROM scratch\n", "big.bin": bytes(range(256)) * 4096})
    app = GitSource(url=repo.url, branch="main")

    tars = []
    for state in ("one", "two"):
        git = GitMirrors(tmp_path / state)
        with await git.export_context(
            app, commit=commit[:10], context=".", dockerfile="Dockerfile"
        ) as context:
            tars.append(context.read())

    assert tars[0] == tars[1]
    assert read(tars[0], "big.bin") == bytes(range(256)) * 4096


def hand_made_commit(repo: GitRepo, name: str) -> str:
    """A commit whose `sub` directory holds one file called `name`, its tree objects
    written byte by byte: git's own commands refuse to make such a tree."""
    git = pygit2.Repository(str(repo.remote))

    def tree(*entries: tuple[bytes, bytes, pygit2.Oid]) -> pygit2.Oid:
        raw = b"".join(mode + b" " + entry + b"\0" + oid.raw for mode, entry, oid in entries)
        return git.odb.write(pygit2.enums.ObjectType.TREE, raw)

    sub = tree((b"100644", name.encode(), git.create_blob(b"payload")))
    root = tree(
        (b"100644", b"Dockerfile", git.create_blob(b"FROM scratch\n")), (b"40000", b"sub", sub)
    )
    who = pygit2.Signature("test", "test@example.com", 1_700_000_000, 0)
    return str(git.create_commit(None, who, who, "hand-made", root, []))


@pytest.mark.parametrize("name", ["..", ".git", ".", "a/b"])
def test_a_tree_entry_no_checkout_can_hold_fails_the_export(repo: GitRepo, name: str) -> None:
    """An entry named '.', '..' or '.git', or with a '/' in its name, would reach Docker as a
    path out of its directory or into a git directory: the export fails in one line naming
    the path instead."""
    commit = hand_made_commit(repo, name)

    with pytest.raises(BuildContextRefused) as refused:
        context_tar(repo, commit)

    message = str(refused.value)
    assert f"'sub/{name}'" in message
    assert "\n" not in message


def test_a_dockerignore_pattern_over_the_limit_fails_the_export(repo: GitRepo) -> None:
    commit = repo.commit(
        {".dockerignore": "*.log\n" + "a" * 1025 + "\n", "Dockerfile": "FROM scratch\n"}
    )

    with pytest.raises(BuildFailed, match=r"^\.dockerignore line 2: .*1025 characters"):
        context_tar(repo, commit)


MIB = 1024 * 1024


def test_a_file_over_max_file_mb_fails_naming_it_unless_dockerignore_leaves_it_out(
    repo: GitRepo,
) -> None:
    """One file past `max_file_mb` fails the export with its path and size, before anything
    is written; the same file left out by `.dockerignore` is never sent, so it is no reason
    to fail."""
    files: dict[str, str | bytes] = {
        "Dockerfile": "FROM scratch\n",
        "data/big.bin": b"x" * (2 * MIB + 1),
    }
    commit = repo.commit(files)
    out = io.BytesIO()

    with pytest.raises(BuildContextRefused) as refused:
        context_tar(repo, commit, limits=ContextLimits(max_file_mb=2), out=out)

    assert str(refused.value) == (
        "build context file 'data/big.bin' is 2,097,153 bytes, over build.max_file_mb = 2"
    )
    assert out.getvalue() == b""
    ignored = repo.commit({".dockerignore": "data\n"})
    assert "data/big.bin" not in members(
        context_tar(repo, ignored, limits=ContextLimits(max_file_mb=2))
    )
    assert "data/big.bin" in members(context_tar(repo, commit, limits=ContextLimits(max_file_mb=3)))


def test_a_context_over_max_context_mb_fails_before_anything_is_written(repo: GitRepo) -> None:
    """The sizes are added up from the objects' headers first: a context past
    `max_context_mb` fails naming how much was counted, and not one byte reaches the tar."""
    files: dict[str, str | bytes] = {"Dockerfile": "FROM scratch\n"}
    files.update({f"part-{n}.bin": bytes([n]) * MIB for n in range(3)})
    commit = repo.commit(files)
    out = io.BytesIO()

    with pytest.raises(BuildContextRefused) as refused:
        context_tar(repo, commit, limits=ContextLimits(max_context_mb=2), out=out)

    assert str(refused.value).startswith("build context over build.max_context_mb = 2: ")
    assert str(refused.value).endswith(" bytes counted up to 'part-1.bin'")
    assert out.getvalue() == b""
    assert len(context_tar(repo, commit, limits=ContextLimits(max_context_mb=4))) > 3 * MIB


def test_long_names_cannot_carry_a_context_past_its_limit(repo: GitRepo) -> None:
    """A name over 100 characters takes an extended header the first count leaves out;
    the tar is held to the limit while it is written all the same."""
    name = "n" * 150
    files: dict[str, str | bytes] = {"Dockerfile": "FROM scratch\n"}
    files.update({f"{name}-{n:04d}": "" for n in range(800)})  # ~400 KiB counted, ~1.2 MiB sent
    commit = repo.commit(files)

    with pytest.raises(BuildContextRefused, match=r"over build\.max_context_mb = 1"):
        context_tar(repo, commit, limits=ContextLimits(max_context_mb=1))

    assert len(context_tar(repo, commit, limits=ContextLimits(max_context_mb=2))) > MIB


@pytest.mark.slow
async def test_a_large_context_is_spooled_to_state_dir_not_held_in_memory(
    repo: GitRepo, tmp_path: Path
) -> None:
    """64 MiB of files: the export holds one file at a time, and the tar goes to a file
    under state_dir (not /tmp, often memory itself), gone once the caller closes it."""
    small = repo.commit({"Dockerfile": "FROM scratch\n", "part-0.bin": "small"})
    files: dict[str, str | bytes] = {f"part-{n}.bin": bytes([n]) * 4 * MIB for n in range(16)}
    commit = repo.commit(files)
    git = GitMirrors(tmp_path / "state")
    app = GitSource(url=repo.url, branch="main")
    # A small export first, so that the mirror is fetched and the code paths are warm.
    (await git.export_context(app, commit=small, context=".", dockerfile="Dockerfile")).close()
    await git.resolve(app)

    before = rss_kib()
    with PeakRss() as peak:
        exported = await git.export_context(
            app, commit=commit, context=".", dockerfile="Dockerfile"
        )
    growth_mib = (peak.peak - before) / 1024

    with exported:
        assert where(exported).parent == tmp_path / "state" / "git" / "spool"
        size = exported.seek(0, io.SEEK_END)
        assert size > 64 * MIB
    print(f"exported {size} bytes; peak RSS growth {growth_mib:.1f} MiB")
    assert growth_mib < 40, f"RSS grew {growth_mib:.1f} MiB while a 64 MiB context was exported"
    assert list((tmp_path / "state" / "git" / "spool").iterdir()) == []


def where(file: BinaryIO) -> Path:
    """The path of the file behind an open file object (deleted or not)."""
    return Path(f"/proc/self/fd/{file.fileno()}").readlink()


async def test_the_mirrors_apply_their_limits_and_leave_no_spool_behind(
    repo: GitRepo, tmp_path: Path
) -> None:
    """The daemon's limits reach the export through GitMirrors; a refused context leaves
    nothing in state_dir."""
    commit = repo.commit({"Dockerfile": "FROM scratch\n", "big.bin": b"x" * (2 * MIB)})
    git = GitMirrors(tmp_path / "state", context_limits=ContextLimits(max_file_mb=1))
    app = GitSource(url=repo.url, branch="main")

    with pytest.raises(BuildContextRefused, match=r"'big\.bin' is 2,097,152 bytes"):
        await git.export_context(app, commit=commit, context=".", dockerfile="Dockerfile")

    assert list((tmp_path / "state" / "git" / "spool").iterdir()) == []
