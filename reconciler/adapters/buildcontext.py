"""A commit's build context as Docker receives it: an uncompressed tar.

The tar is written from the commit's tree in the object database, never from a working copy,
so what gets built is exactly what was committed. It is deterministic: entries come in tree
order with fixed owner and mtime, so the same tree always gives the same bytes and Docker's
layer cache can reuse earlier builds.

`.dockerignore` follows Docker's rules (see the dockerignore module). The Dockerfile and
`.dockerignore` are always sent. A tree entry no checkout could hold (`.`, `..`, `.git`, a
name with '/' or NUL, which only a hand-made tree has) fails the export rather than reaching
Docker as a path that climbs out of, or into the git directory of, the context.

Whoever pushes decides how big the context is, so it is bounded (ContextLimits) and never
held whole in memory: the tree is walked twice, first reading only object headers to add up
the sizes (a context or a file over its limit fails before a byte is written), then writing
one blob at a time.

Plain functions over a `pygit2.Repository`; callers run them in a thread.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

import pygit2
from pygit2.enums import FileMode

from reconciler.adapters.dockerignore import DockerIgnore
from reconciler.adapters.tarheader import header
from reconciler.errors import BuildContextRefused, GitRevisionNotFound, ManifestError

# POSIX allows 40 symlink hops; git trees can be built with cycles, so the bound matters.
_MAX_LINK_HOPS = 40
_DOCKERIGNORE = ".dockerignore"
_REFUSED_NAMES = frozenset({"", ".", "..", ".git"})
_MIB = 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE
_NULS = bytes(_BLOCK)
# Small members are gathered and written this many bytes at a time; a file at least this
# big is written straight from the blob's memory, without a copy.
_WRITE_SIZE = 1024 * 1024


@dataclass(frozen=True)
class ContextLimits:
    """How big a build context may be (`[build]` max_context_mb and max_file_mb)."""

    max_context_mb: int = 2048
    max_file_mb: int = 512

    @property
    def max_bytes(self) -> int:
        return self.max_context_mb * _MIB

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * _MIB


def write_context_tar(
    repo: pygit2.Repository,
    commit_sha: str,
    *,
    context: str,
    dockerfile: str,
    out: IO[bytes],
    limits: ContextLimits | None = None,
) -> int:
    """Write the build context at `context` in commit `commit_sha` to `out` as a tar; the
    number of bytes written.

    Raises ManifestError, naming the path, when the context or Dockerfile is missing, is not
    what it should be, or escapes its bounds (`..`, absolute paths, symlinks pointing out).
    Raises BuildContextRefused when a tree entry has a name no checkout can hold, when
    `.dockerignore` is invalid, or when the context or one of its files is over `limits`.
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
    always_sent = frozenset({"/".join(dockerfile_parts), "/".join(target_parts), _DOCKERIGNORE})
    limits = limits or ContextLimits()
    _check_sizes(repo, _Walk(ignore=ignore, always_sent=always_sent).members(found), limits)
    tar = _TarWriter(out, limits=limits)
    for path, kind, mode, entry in _Walk(ignore=ignore, always_sent=always_sent).members(found):
        if kind == tarfile.REGTYPE:
            # One blob in memory at a time (libgit2 inflates whole objects), written from
            # the blob's own buffer.
            assert isinstance(entry, pygit2.Blob)
            data = memoryview(entry)
            tar.add(path, header(path, kind=kind, mode=mode, size=len(data)), data)
            del data  # before the next blob is inflated, not after
        elif kind == tarfile.SYMTYPE:
            assert entry is not None
            link = _decode(entry.peel(pygit2.Blob).data)
            tar.add(path, header(path, kind=kind, mode=mode, linkname=link))
        else:
            tar.add(path, header(path, kind=kind, mode=mode))
    return tar.close()


# One member of the context: its path, tar type, mode, and the blob for a file or link.
_Member = tuple[str, bytes, int, pygit2.Object | None]


def _check_sizes(
    repo: pygit2.Repository, members: Iterable[_Member], limits: ContextLimits
) -> None:
    """Fail before anything is written when a file or the whole context is over `limits`.

    Sizes come from the objects' headers, which libgit2 reads without inflating the objects,
    so a tree of gigabytes is refused in the time it takes to list it. The sum counts a
    header block per member and each file padded to whole blocks, as the tar holds them (a
    long name's extra header is counted when the tar is written).
    """
    odb = repo.odb
    total = 2 * _BLOCK
    for path, kind, _, entry in members:
        total += _BLOCK
        if kind != tarfile.REGTYPE:
            continue
        assert entry is not None
        size = odb.read_header(entry.id)[1]
        if size > limits.max_file_bytes:
            raise BuildContextRefused(
                f"build context file {path!r} is {_size(size)}, over build.max_file_mb"
                f" = {limits.max_file_mb}"
            )
        total += size + (-size % _BLOCK)
        if total > limits.max_bytes:
            raise _too_big(limits, counted=total, at=path)


def _too_big(limits: ContextLimits, *, counted: int, at: str) -> BuildContextRefused:
    return BuildContextRefused(
        f"build context over build.max_context_mb = {limits.max_context_mb}:"
        f" {_size(counted)} counted up to {at!r}"
    )


def _size(size: int) -> str:
    # Bytes, not rounded megabytes: "2.0 MB, over max_file_mb = 2" would read as no excess.
    return f"{size:,} bytes"


class _TarWriter:
    """The bytes `tarfile.open(mode="w|", format=PAX_FORMAT)` writes, without its per-member
    copies: each header, the data as it is, NUL padding, two NUL blocks and a padded record
    at the end. Small members are gathered into writes of about _WRITE_SIZE; the tar never
    grows past the limit, whatever the headers of long names add."""

    def __init__(self, out: IO[bytes], *, limits: ContextLimits) -> None:
        self._out = out
        self._limits = limits
        self._buffer = bytearray()
        self.size = 0

    def add(self, path: str, head: bytes, data: memoryview | None = None) -> None:
        length = len(data) if data is not None else 0
        padding = -length % _BLOCK
        self.size += len(head) + length + padding
        if self.size > self._limits.max_bytes:
            raise _too_big(self._limits, counted=self.size, at=path)
        buffer = self._buffer
        buffer += head
        if data is not None and length:
            if length >= _WRITE_SIZE:
                self._flush()
                self._out.write(data)
            else:
                buffer += data
            buffer += _NULS[:padding]
        if len(buffer) >= _WRITE_SIZE:
            self._flush()

    def close(self) -> int:
        """Write the end of the archive; the tar's size in bytes."""
        end = 2 * _BLOCK
        end += -(self.size + end) % tarfile.RECORDSIZE
        self._buffer += bytes(end)
        self.size += end
        self._flush()
        return self.size

    def _flush(self) -> None:
        if self._buffer:
            self._out.write(self._buffer)
            self._buffer.clear()


@dataclass
class _Walk:
    """One depth-first pass over the context tree, yielding the members to send in order."""

    ignore: DockerIgnore
    always_sent: frozenset[str]
    # Excluded directories already yielded because something inside them is sent.
    written: set[str] = field(default_factory=set)

    def members(
        self, tree: pygit2.Tree, prefix: str = "", pending: tuple[str, ...] = ()
    ) -> Iterator[_Member]:
        """The members under `tree`.

        `pending` are excluded parent directories not yielded yet: they are yielded only
        when something inside them is sent, so the files re-included by `!` have a parent.
        """
        matching = bool(self.ignore.patterns)
        for entry in tree:
            name = entry.name
            assert name is not None  # tree entries always have a name
            path = prefix + name
            if name in _REFUSED_NAMES or "/" in name or "\0" in name:
                raise BuildContextRefused(
                    f"build context entry {path!r} has a name no checkout can hold"
                    " ('.', '..', '.git', '/' or NUL in it)"
                )
            mode = entry.filemode
            excluded = matching and path not in self.always_sent and self.ignore.excludes(path)
            if mode == FileMode.TREE:
                if not excluded:
                    yield from self._flush(pending)
                    yield path, tarfile.DIRTYPE, 0o755, None
                    yield from self.members(entry.peel(pygit2.Tree), path + "/")
                elif self._may_send_below(path):
                    yield from self.members(entry.peel(pygit2.Tree), path + "/", (*pending, path))
                continue
            if excluded:
                continue
            yield from self._flush(pending)
            if mode == FileMode.LINK:
                yield path, tarfile.SYMTYPE, 0o777, entry
            elif mode == FileMode.COMMIT:
                # A submodule: like an un-initialised checkout, an empty directory.
                yield path, tarfile.DIRTYPE, 0o755, None
            else:
                # A tree yields its entries as objects, loaded when first read: no second
                # lookup by id.
                file_mode = 0o755 if mode == FileMode.BLOB_EXECUTABLE else 0o644
                yield path, tarfile.REGTYPE, file_mode, entry

    def _may_send_below(self, directory: str) -> bool:
        """Whether anything under an excluded directory can still be sent.

        With any `!` pattern the excluded directory is walked: reading trees is cheap, and
        guessing from the pattern's text (as Docker's classic builder did) misses `!**/x`.
        """
        below = directory + "/"
        return self.ignore.has_exceptions or any(p.startswith(below) for p in self.always_sent)

    def _flush(self, pending: tuple[str, ...]) -> Iterator[_Member]:
        for directory in pending:
            if directory not in self.written:
                self.written.add(directory)
                yield directory, tarfile.DIRTYPE, 0o755, None


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
