"""A commit's build context as Docker receives it: an uncompressed tar.

The tar is written from the commit's tree in the object database, never from a working copy,
so what gets built is exactly what was committed. It is deterministic: entries come in tree
order with fixed owner and mtime, so the same tree always gives the same bytes and Docker's
layer cache can reuse earlier builds.

`.dockerignore` follows Docker's rules (see the dockerignore module). The Dockerfile and
`.dockerignore` are always sent. A tree entry no checkout could hold (`.`, `..`, `.git`, a
name with '/' or NUL, which only a hand-made tree has) fails the export rather than reaching
Docker as a path that climbs out of, or into the git directory of, the context.

Plain functions over a `pygit2.Repository`; callers run them in a thread.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import pygit2
from pygit2.enums import FileMode

from reconciler.adapters.dockerignore import DockerIgnore
from reconciler.errors import GitRevisionNotFound, ManifestError

# Entries carry this mtime instead of the commit time: the same tree then gives the same tar
# even across commits, which is what lets Docker's cache hit after an unrelated commit.
_MTIME = 0
# POSIX allows 40 symlink hops; git trees can be built with cycles, so the bound matters.
_MAX_LINK_HOPS = 40
_DOCKERIGNORE = ".dockerignore"
_REFUSED_NAMES = frozenset({"", ".", "..", ".git"})


def write_context_tar(
    repo: pygit2.Repository,
    commit_sha: str,
    *,
    context: str,
    dockerfile: str,
    out: IO[bytes],
) -> None:
    """Write the build context at `context` in commit `commit_sha` to `out` as a tar.

    Raises ManifestError, naming the path, when the context or Dockerfile is missing, is not
    what it should be, or escapes its bounds (`..`, absolute paths, symlinks pointing out),
    when a tree entry has a name no checkout can hold, or when `.dockerignore` is invalid.
    """
    commit = _commit(repo, commit_sha)
    short = commit_sha[:12]
    context_parts = _relative_parts(context, label="build context", bound="the repository")
    found, _ = _resolve(
        repo, commit.tree, context_parts, label=f"build context '{context}'", bound="repository"
    )
    if not isinstance(found, pygit2.Tree):
        raise ManifestError(f"build context '{context}' is not a directory in commit {short}")

    dockerfile_parts = _relative_parts(dockerfile, label="dockerfile", bound="the build context")
    target, target_parts = _resolve(
        repo, found, dockerfile_parts, label=f"dockerfile '{dockerfile}'", bound="build context"
    )
    if target is None:
        raise ManifestError(f"dockerfile '{dockerfile}' not found in commit {short}")
    if not isinstance(target, pygit2.Blob):
        raise ManifestError(f"dockerfile '{dockerfile}' is not a file in commit {short}")

    ignore = DockerIgnore.parse(_read_dockerignore(repo, found))
    # A symlinked Dockerfile is sent together with the file it points to.
    always_sent = {"/".join(dockerfile_parts), "/".join(target_parts), _DOCKERIGNORE}
    tar = _TarWriter(out)
    _Walk(repo=repo, tar=tar, ignore=ignore, always_sent=always_sent).tree(found, "")
    tar.close()


class _TarWriter:
    """The bytes `tarfile.open(mode="w|", format=PAX_FORMAT)` writes, without its per-member
    copies: the header from `TarInfo.tobuf`, the data as it is, NUL padding, two NUL blocks
    and a padded record at the end."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._offset = 0

    def add(self, info: tarfile.TarInfo, data: bytes) -> None:
        header = info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
        padding = -len(data) % tarfile.BLOCKSIZE
        self._out.write(header)
        if data:
            self._out.write(data)
            self._out.write(tarfile.NUL * padding)
        self._offset += len(header) + len(data) + padding

    def close(self) -> None:
        end = tarfile.NUL * (2 * tarfile.BLOCKSIZE)
        self._offset += len(end)
        self._out.write(end + tarfile.NUL * (-self._offset % tarfile.RECORDSIZE))


@dataclass
class _Walk:
    """One depth-first pass over the context tree, writing entries as it goes."""

    repo: pygit2.Repository
    tar: _TarWriter
    ignore: DockerIgnore
    always_sent: set[str]
    # Excluded directories already written because something inside them is sent.
    written: set[str] = field(default_factory=set)

    def tree(self, tree: pygit2.Tree, prefix: str, pending: tuple[str, ...] = ()) -> None:
        """Write the entries under `tree`.

        `pending` are excluded parent directories not written yet: they are written only
        when something inside them is sent, so the files re-included by `!` have a parent.
        """
        for entry in tree:
            name = entry.name
            assert name is not None  # tree entries always have a name
            path = prefix + name
            if name in _REFUSED_NAMES or "/" in name or "\0" in name:
                raise ManifestError(
                    f"build context entry {path!r} has a name no checkout can hold"
                    " ('.', '..', '.git', '/' or NUL in it)"
                )
            mode = entry.filemode
            excluded = path not in self.always_sent and self.ignore.excludes(path)
            if mode == FileMode.TREE:
                if not excluded:
                    self._flush(pending)
                    self._add(path, tarfile.DIRTYPE, 0o755)
                    self.tree(entry.peel(pygit2.Tree), path + "/")
                elif self._may_send_below(path):
                    self.tree(entry.peel(pygit2.Tree), path + "/", (*pending, path))
                continue
            if excluded:
                continue
            self._flush(pending)
            if mode == FileMode.LINK:
                target = entry.peel(pygit2.Blob).data
                self._add(path, tarfile.SYMTYPE, 0o777, linkname=_decode(target))
            elif mode == FileMode.COMMIT:
                # A submodule: like an un-initialised checkout, an empty directory.
                self._add(path, tarfile.DIRTYPE, 0o755)
            else:
                # One blob in memory at a time: libgit2 inflates whole objects anyway. A tree
                # yields its entries as objects: no second lookup by id.
                data = entry.peel(pygit2.Blob).data
                file_mode = 0o755 if mode == FileMode.BLOB_EXECUTABLE else 0o644
                self._add(path, tarfile.REGTYPE, file_mode, data=data)

    def _may_send_below(self, directory: str) -> bool:
        """Whether anything under an excluded directory can still be sent.

        With any `!` pattern the excluded directory is walked: reading trees is cheap, and
        guessing from the pattern's text (as Docker's classic builder did) misses `!**/x`.
        """
        below = directory + "/"
        return self.ignore.has_exceptions or any(p.startswith(below) for p in self.always_sent)

    def _flush(self, pending: tuple[str, ...]) -> None:
        for directory in pending:
            if directory not in self.written:
                self.written.add(directory)
                self._add(directory, tarfile.DIRTYPE, 0o755)

    def _add(
        self, path: str, kind: bytes, mode: int, *, linkname: str = "", data: bytes = b""
    ) -> None:
        info = tarfile.TarInfo(path)
        info.type = kind
        info.mode = mode
        info.mtime = _MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.linkname = linkname
        info.size = len(data)
        self.tar.add(info, data)


def _commit(repo: pygit2.Repository, sha: str) -> pygit2.Commit:
    try:
        found = repo.get(sha)
        if found is not None:
            return found.peel(pygit2.Commit)
    except (ValueError, pygit2.GitError) as exc:
        raise GitRevisionNotFound(f"commit {sha} is not in the repository") from exc
    raise GitRevisionNotFound(f"commit {sha} is not in the repository")


def _relative_parts(path: str, *, label: str, bound: str) -> list[str]:
    """Split a config path into components, refusing anything that could leave `bound`."""
    if path.startswith("/"):
        raise ManifestError(f"{label} '{path}' is an absolute path; it must stay inside {bound}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ManifestError(f"{label} '{path}' contains '..'; it must stay inside {bound}")
    return parts


def _resolve(
    repo: pygit2.Repository,
    root: pygit2.Tree,
    parts: Iterable[str],
    *,
    label: str,
    bound: str,
) -> tuple[pygit2.Object | None, list[str]]:
    """Look up `parts` under `root`, following symlinks that stay inside `root`.

    Returns the object (None when missing) and its canonical path. A symlink pointing out
    of `root` (absolute, or '..' past it) is a ManifestError: Docker cannot follow it either.
    """
    todo = list(parts)
    done: list[str] = []
    trees = [root]
    hops = 0
    found: pygit2.Object | None = root
    while todo:
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if not done:
                raise ManifestError(f"{label} is a symlink pointing outside the {bound}")
            done.pop()
            trees.pop()
            found = trees[-1]
            continue
        tree = trees[-1]
        if name not in tree:
            return None, [*done, name, *todo]
        entry = tree[name]
        if entry.filemode == FileMode.LINK:
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise ManifestError(f"{label} goes through too many symlinks")
            target = _decode(repo[entry.id].peel(pygit2.Blob).data)
            if target.startswith("/"):
                raise ManifestError(f"{label} is a symlink pointing outside the {bound}")
            todo = target.split("/") + todo
            continue
        found = repo[entry.id]
        done.append(name)
        if isinstance(found, pygit2.Tree):
            trees.append(found)
        elif todo:
            return None, [*done, *todo]
    return found, done


def _read_dockerignore(repo: pygit2.Repository, context: pygit2.Tree) -> str:
    found, _ = _resolve(repo, context, [_DOCKERIGNORE], label=_DOCKERIGNORE, bound="build context")
    if not isinstance(found, pygit2.Blob):
        return ""
    return found.data.decode("utf-8", errors="replace")


def _decode(raw: bytes) -> str:
    # Paths in git are bytes; surrogateescape round-trips non-UTF-8 names into the tar.
    return raw.decode("utf-8", errors="surrogateescape")
