"""Git: bare mirrors of the tracked repositories, and the revision each app should run.

Every repository is mirrored once under `state_dir/git/<sha256(url)[:16]>`, however many
apps track it. A pass costs one ls-remote per repository (shared by the apps on it); a fetch
happens only when the remote points at a commit the mirror lacks. The remote's answer is the
truth: the mirror's own refs are a cache of objects and are never consulted for a branch.

A fetch brings only the refs the apps on the repository track (`track`): each app's branch
(a pinned commit is reached through it) and, for a pin that is not a full SHA, the tag of
that name. Other branches and tags, however many and however big, are never downloaded; a
ref no app tracks any more is dropped from the mirror at its next fetch.

pygit2 blocks, so every call runs in a thread. A thread cannot be interrupted, so remote
calls are bounded three ways: the awaiting coroutine gives up after `timeout` seconds without
progress (not total time: a first clone of a big repository may take minutes); libgit2's
socket timeouts end a blocked read; and an abandoned call aborts at its next callback. A URL
whose earlier call has not returned yet is reported unavailable instead of piling up threads.

Credentials are read from their files at use time and never appear in an error message:
URLs in messages lose their userinfo, and libgit2's messages are scrubbed as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

import pygit2
from pygit2.enums import CredentialType, FetchPrune, Option

from reconciler.adapters.buildcontext import ContextLimits, write_context_tar
from reconciler.config import AppConfig
from reconciler.decisions.repourl import redact_url, redact_urls_in
from reconciler.errors import (
    BranchEmpty,
    DefinitionError,
    GitAuthError,
    GitRevisionNotFound,
    GitUnavailable,
    ReconcilerError,
)

_T = TypeVar("_T")

# The refs a mirror keeps; anything else under them that no app tracks is dropped.
_MIRRORED = ("refs/heads/", "refs/tags/")
_SPOOL_BYTES = 8 * 1024 * 1024
_FULL_SHA = re.compile(r"[0-9a-fA-F]{40}")
_SHORT_SHA = re.compile(r"[0-9a-fA-F]{4,39}")
# libgit2 asks again after a rejected credential; answering the same forever would loop.
_CREDENTIAL_TRIES = 3
_MEMO_SIZE = 1024
SUBJECT_LIMIT = 200
# A definition file read from a commit is a few kilobytes; a pusher's huge one is refused.
MAX_READ_BYTES = 1_000_000
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_AUTH_HINTS = re.compile(
    r"authenticat|permission denied|unknown host|host ?key|certificate|credential"
    r"|unauthori[sz]ed|forbidden|status code: 40[13]\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class GitSource:
    """Where an app's code lives and which revision of it the app follows."""

    url: str  # https://, ssh://, git@host:path, file://
    branch: str
    revision: str = ""  # a pin (commit SHA, full or abbreviated, or tag); overrides branch
    paths: tuple[str, ...] = ()  # monorepo: only commits touching these count
    token_file: Path | None = None  # HTTPS token, sent as password for "x-access-token"
    ssh_key_file: Path | None = None  # SSH private key; "<key>.pub" is used when present


def source_of(app: AppConfig) -> GitSource:
    """Where an app's commits come from, as the mirrors need it."""
    return GitSource(
        url=app.repo,
        branch=app.branch,
        revision=app.revision,
        paths=app.paths,
        token_file=app.git_token_file,
        ssh_key_file=app.git_ssh_key_file,
    )


class GitMirrors:
    """Bare mirrors under `state_dir/git`, shared by every app tracking the same URL.

    One asyncio.Lock per URL, so apps sharing a repository never fetch it twice at once.
    `ls_remote_count` and `fetch_count` count the network calls made (the benchmark reads
    them).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        timeout: float = 60.0,
        heads_ttl: float = 1.0,
        context_limits: ContextLimits | None = None,
    ) -> None:
        self.root = state_dir / "git"
        self.timeout = timeout
        self.context_limits = context_limits or ContextLimits()
        self.heads_ttl = heads_ttl
        self.ls_remote_count = 0
        self.fetch_count = 0
        # (branch, pin) each app follows, per URL: set by `track`, and added to by every
        # source asked about (so a caller that never calls `track` fetches what it asks).
        self._tracked: dict[str, set[tuple[str, str]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._heads: dict[_HeadsKey, tuple[float, dict[str, str]]] = {}
        self._heads_calls: dict[_HeadsKey, asyncio.Task[dict[str, str]]] = {}
        self._unfinished: dict[str, asyncio.Future[object]] = {}
        self._watches: set[_Watch] = set()
        self._open_lock = threading.Lock()
        self._memo_lock = threading.Lock()
        self._touching: dict[tuple[str, tuple[str, ...]], str | None] = {}
        # libgit2's socket timeouts are process-wide; they are what finally frees a thread
        # blocked on a silent server after the coroutine awaiting it has given up.
        millis = max(1, int(timeout * 1000))
        pygit2.option(Option.SET_SERVER_CONNECT_TIMEOUT, millis)
        pygit2.option(Option.SET_SERVER_TIMEOUT, millis)
        # libgit2 hashes every object again on every read; the fetch already checked them
        # when it indexed the pack. Off, a build context reads its blobs twice as fast.
        pygit2.option(Option.ENABLE_STRICT_HASH_VERIFICATION, False)

    def mirror_path(self, url: str) -> Path:
        """The bare mirror of `url`."""
        return self.root / hashlib.sha256(url.encode()).hexdigest()[:16]

    async def remote_heads(self, source: GitSource) -> dict[str, str]:
        """The remote's refs as {refname: sha}, from one ls-remote.

        Concurrent callers share one call, and an answer is reused for `heads_ttl` seconds,
        so the apps on one repository cost one ls-remote per pass.
        Raises GitUnavailable or GitAuthError.
        """
        key = (source.url, source.token_file, source.ssh_key_file)
        cached = self._heads.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.heads_ttl:
            return dict(cached[1])
        call = self._heads_calls.get(key)
        if call is None:
            call = asyncio.create_task(self._list_heads(source, key))
            self._heads_calls[key] = call
            call.add_done_callback(lambda done: self._heads_call_done(key, done))
        # Shielded: one caller giving up must not cancel the call the others await.
        return dict(await asyncio.shield(call))

    def track(self, sources: Iterable[GitSource]) -> None:
        """The sources every app of the daemon follows (its config): from now on a fetch
        brings their branches and tags and drops the refs of any other."""
        tracked: dict[str, set[tuple[str, str]]] = {}
        for source in sources:
            tracked.setdefault(source.url, set()).add((source.branch, source.revision))
        self._tracked = tracked

    def forget_heads(self, url: str) -> None:
        """Drop cached heads of `url`, e.g. when a webhook says it changed."""
        for key in [k for k in self._heads if k[0] == url]:
            del self._heads[key]

    async def resolve(self, source: GitSource) -> str:
        """The 40-hex commit the app should run.

        A pin names a commit (full or abbreviated SHA) or a tag, peeled to its commit. With
        `paths`: the newest commit on the branch's first-parent chain whose tree differs from
        its first parent's at one of the paths, so a merge counts as the commit that brought
        a change onto the branch. Otherwise the branch head.
        Raises BranchEmpty for a repository without any branch yet (a branch missing from a
        repository that has others, or that this mirror fetched before, is
        GitRevisionNotFound), GitRevisionNotFound,
        GitUnavailable or GitAuthError.
        """
        if source.revision:
            return await self._resolve_pin(source)
        heads = await self.remote_heads(source)
        head = heads.get(f"refs/heads/{source.branch}")
        ref = f"refs/heads/{source.branch}"
        if (
            head is None
            and not any(name.startswith("refs/heads/") for name in heads)
            # A branch this mirror has fetched before was deleted: that needs a human.
            and not await self._read(source.url, lambda repo: ref in repo.references)
        ):
            raise BranchEmpty(
                f"branch '{source.branch}' of {redact_url(source.url)} has no commit yet (the"
                " repository has no branch); waiting for the first push"
            )
        if head is None:
            raise GitRevisionNotFound(
                f"branch '{source.branch}' not found in {redact_url(source.url)}"
            )
        if await self._fetch_unless(source, lambda repo: head if head in repo else None) is None:
            # The branch moved between the ls-remote and the fetch: ask again next pass.
            self.forget_heads(source.url)
            raise GitUnavailable(f"branch '{source.branch}' moved during the fetch; retrying")
        if not source.paths:
            return head
        paths = tuple(sorted({_normal_path(p) for p in source.paths}))
        found = await self._read(source.url, lambda repo: self._newest_touching(repo, head, paths))
        if found is None:
            raise GitRevisionNotFound(
                f"no commit on branch '{source.branch}' touches {', '.join(source.paths)}"
            )
        return found

    async def export_context(
        self, source: GitSource, *, commit: str, context: str, dockerfile: str
    ) -> BinaryIO:
        """The build context of `commit` as an uncompressed tar, rewound to the start.

        Built from the commit's tree in the mirror, never from a working copy. A small one
        stays in memory; past _SPOOL_BYTES it goes to a file under `state_dir` (not /tmp,
        often a tmpfs, which is memory again), deleted when the caller closes it.
        Raises ManifestError for a bad context or Dockerfile path, BuildContextRefused for a
        context that cannot be sent (over `context_limits`, a bad `.dockerignore`).
        """
        full = await self._commit(source, commit, f"commit '{commit}'")
        spool = self.root / "spool"
        # Returned to the caller, who closes it: no `with` here.
        out = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, dir=str(spool))  # noqa: SIM115
        limits = self.context_limits

        def export(repo: pygit2.Repository) -> None:
            spool.mkdir(exist_ok=True)
            write_context_tar(
                repo, full, context=context, dockerfile=dockerfile, out=out, limits=limits
            )

        try:
            await self._read(source.url, export)
            out.seek(0)
        except BaseException:
            out.close()
            raise
        return cast(BinaryIO, out)

    async def commit_subject(self, source: GitSource, commit: str) -> str:
        """The first line of `commit`'s message, read from the mirror (no network call).

        The text is whatever the commit's author wrote: it is decoded leniently, stripped of
        control characters (a terminal escape must not reach a chat client) and cut to
        SUBJECT_LIMIT characters. Raises GitRevisionNotFound when the mirror lacks the commit.
        """
        subject = await self._read(source.url, lambda repo: _subject(repo, commit))
        if subject is None:
            raise GitRevisionNotFound(f"commit '{commit}' not found in {redact_url(source.url)}")
        return subject

    async def commit_time(self, source: GitSource, commit: str) -> datetime:
        """When `commit` was committed (its committer time, as UTC), read from the mirror
        (no network call); raises GitRevisionNotFound when the mirror lacks the commit. The
        committer's clock says it: a commit made on a skewed clock has a skewed time."""
        seconds = await self._read(source.url, lambda repo: _committed(repo, commit))
        if seconds is None:
            raise GitRevisionNotFound(f"commit '{commit}' not found in {redact_url(source.url)}")
        return datetime.fromtimestamp(seconds, UTC)

    async def read_file(self, source: GitSource, *, commit: str, path: str) -> bytes | None:
        """The bytes of `path` in `commit`'s tree (at most MAX_READ_BYTES), or None when the
        tree has no file there; fetches the commit when the mirror lacks it."""
        full = await self._commit(source, commit, f"commit '{commit}'")
        return await self._read(source.url, lambda repo: _blob(repo, full, path))

    def close(self) -> None:
        """Abort remote calls still running in threads and drop cached answers."""
        for watch in self._watches:
            watch.cancelled.set()
        self._heads.clear()
        with self._memo_lock:
            self._touching.clear()

    # --- revisions -----------------------------------------------------------------------

    async def _resolve_pin(self, source: GitSource) -> str:
        pin = source.revision
        if _FULL_SHA.fullmatch(pin):
            # A full SHA names one immutable commit: once mirrored, no need to ask the remote.
            return await self._commit(source, pin, f"revision '{pin}'")
        heads = await self.remote_heads(source)
        tag = heads.get(f"refs/tags/{pin}")
        if tag is not None:
            tagged = await self._commit(source, tag, f"tag '{pin}'")
            if _SHORT_SHA.fullmatch(pin):
                # `git rev-parse` would quietly take the tag; a pusher who can make a tag
                # spelt like the commit an operator pinned could swap what deploys.
                as_commit = await self._read(source.url, lambda repo: _peel(repo, pin))
                if as_commit is not None and as_commit != tagged:
                    raise GitRevisionNotFound(
                        f"revision '{pin}' is both a tag and an abbreviated commit; pin the "
                        "full commit SHA, or a tag not spelt like one"
                    )
            return tagged
        if _SHORT_SHA.fullmatch(pin):
            return await self._commit(source, pin, f"revision '{pin}'")
        raise GitRevisionNotFound(f"revision '{pin}' not found in {redact_url(source.url)}")

    async def _commit(self, source: GitSource, rev: str, label: str) -> str:
        """The full SHA of the commit `rev` (a SHA or prefix) names, fetching if missing."""
        found = await self._fetch_unless(source, lambda repo: _peel(repo, rev))
        if found is None:
            raise GitRevisionNotFound(f"{label} not found in {redact_url(source.url)}")
        return found

    def _newest_touching(
        self, repo: pygit2.Repository, head: str, paths: tuple[str, ...]
    ) -> str | None:
        commit = repo[head].peel(pygit2.Commit)
        found: str | None = None
        while True:
            with self._memo_lock:
                # The answer for an earlier head holds for every commit above it that
                # touched nothing, so a pass walks only the commits new since the last one.
                if (key := (str(commit.id), paths)) in self._touching:
                    found = self._touching[key]
                    break
            parents = commit.parent_ids
            parent = repo[parents[0]].peel(pygit2.Commit) if parents else None
            if _touches(commit.tree, parent.tree if parent else None, paths):
                found = str(commit.id)
                break
            if parent is None:
                break
            commit = parent
        with self._memo_lock:
            if len(self._touching) >= _MEMO_SIZE:
                del self._touching[next(iter(self._touching))]
            self._touching[(head, paths)] = found
        return found

    # --- mirror and remote ---------------------------------------------------------------

    async def _fetch_unless(
        self, source: GitSource, find: Callable[[pygit2.Repository], _T | None]
    ) -> _T | None:
        """`find(mirror)`, fetching first when it finds nothing; None if it never does."""
        if (found := await self._read(source.url, find)) is not None:
            return found
        self._tracked.setdefault(source.url, set()).add((source.branch, source.revision))
        async with self._locks.setdefault(source.url, asyncio.Lock()):
            # Another app on this repository may have fetched while this one waited.
            if (found := await self._read(source.url, find)) is not None:
                return found
            await self._fetch_tracked(source)
            return await self._read(source.url, find)

    async def _fetch_tracked(self, source: GitSource) -> None:
        """Fetch the refs the apps on `source.url` track, then drop the mirror's other
        branches and tags. `source` is the app asking (its credentials are used)."""
        tracked = self._tracked.get(source.url, set()) | {(source.branch, source.revision)}
        wanted = {ref for branch, pin in tracked for ref in _tracked_refs(branch, pin)}
        refspecs = [f"+{ref}:{ref}" for ref in sorted(wanted)]
        self.fetch_count += 1
        await self._remote(source, lambda remote, calls: _fetch(remote, calls, refspecs))
        await self._read(source.url, lambda repo: _drop_refs(repo, keep=wanted))

    async def _list_heads(self, source: GitSource, key: _HeadsKey) -> dict[str, str]:
        self.ls_remote_count += 1
        heads = await self._remote(source, _ls_remote)
        self._heads[key] = (time.monotonic(), heads)
        return heads

    def _heads_call_done(self, key: _HeadsKey, call: asyncio.Task[dict[str, str]]) -> None:
        if self._heads_calls.get(key) is call:
            del self._heads_calls[key]
        if not call.cancelled():
            call.exception()  # retrieved here too: every caller may have given up on it

    async def _read(self, url: str, read: Callable[[pygit2.Repository], _T]) -> _T:
        """Run `read` on the mirror of `url` in a thread."""
        return await asyncio.to_thread(self._read_in_thread, url, read)

    def _read_in_thread(self, url: str, read: Callable[[pygit2.Repository], _T]) -> _T:
        try:
            return read(self._open(url))
        except (pygit2.GitError, OSError) as exc:
            raise GitUnavailable(f"reading the mirror of {redact_url(url)} failed: {exc}") from exc

    async def _remote(
        self, source: GitSource, operation: Callable[[pygit2.Remote, _Callbacks], _T]
    ) -> _T:
        """Run `operation` against the remote in a thread.

        It may run as long as data keeps coming (a first fetch of a big repository takes
        minutes), but no more than `timeout` seconds without any.
        """
        safe = redact_url(source.url)
        earlier = self._unfinished.pop(source.url, None)
        if earlier is not None and not earlier.done():
            self._unfinished[source.url] = earlier
            raise GitUnavailable(f"an earlier call to {safe} has not returned yet")
        watch = _Watch()
        self._watches.add(watch)
        work = asyncio.ensure_future(
            asyncio.to_thread(self._remote_in_thread, source, operation, watch)
        )
        try:
            while True:
                idle = time.monotonic() - watch.last_activity
                # asyncio.wait, unlike wait_for, leaves `work` running when it times out.
                done, _ = await asyncio.wait({work}, timeout=max(0.0, self.timeout - idle))
                if done:
                    return work.result()
                if time.monotonic() - watch.last_activity >= self.timeout:
                    raise GitUnavailable(f"{safe} sent nothing for {self.timeout:g} s")
        finally:
            self._watches.discard(watch)
            if not work.done():
                # The thread runs on: make libgit2 abort at its next callback, and keep
                # further calls to this URL away until it has returned.
                watch.cancelled.set()
                self._unfinished[source.url] = cast("asyncio.Future[object]", work)
                work.add_done_callback(_retrieve)

    def _remote_in_thread(
        self,
        source: GitSource,
        operation: Callable[[pygit2.Remote, _Callbacks], _T],
        watch: _Watch,
    ) -> _T:
        callbacks = _Callbacks(source, watch)
        try:
            remote = self._open(source.url).remotes.create_anonymous(source.url)
            return operation(remote, callbacks)
        except ReconcilerError:
            raise
        except (pygit2.GitError, OSError) as exc:
            # Scrubbed in place so that the chained original cannot leak a credential either.
            exc.args = (_scrub(str(exc), callbacks.token),)
            raise _translate(exc, redact_url(source.url)) from exc

    def _open(self, url: str) -> pygit2.Repository:
        path = self.mirror_path(url)
        with self._open_lock:
            if not (path / "HEAD").is_file():
                path.mkdir(parents=True, exist_ok=True)
                return pygit2.init_repository(str(path), bare=True)
            try:
                return pygit2.Repository(str(path))
            except pygit2.GitError:
                # A mirror is only a cache (state_dir is safe to delete): start it over.
                shutil.rmtree(path)
                path.mkdir(parents=True)
                return pygit2.init_repository(str(path), bare=True)


_HeadsKey = tuple[str, Path | None, Path | None]


class _Watch:
    """Shared by a remote call's thread, which reports activity, and the coroutine awaiting
    it, which gives up after `timeout` idle seconds and then asks the thread to stop."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.last_activity = time.monotonic()


class _Callbacks(pygit2.RemoteCallbacks):
    """Credentials, host verification, activity and cancellation for one remote call."""

    def __init__(self, source: GitSource, watch: _Watch) -> None:
        super().__init__()
        self._source = source
        self._watch = watch
        self._tries = 0
        self.token = _read_token(source.token_file) if source.token_file else None

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: CredentialType
    ) -> pygit2.Username | pygit2.UserPass | pygit2.Keypair:
        self._check_cancel()
        safe = redact_url(self._source.url)
        self._tries += 1
        if self._tries > _CREDENTIAL_TRIES:
            raise GitAuthError(f"{safe} rejected the configured credential")
        if self.token is not None and allowed_types & CredentialType.USERPASS_PLAINTEXT:
            return pygit2.UserPass("x-access-token", self.token)
        key = self._source.ssh_key_file
        user = username_from_url or "git"
        if key is not None and allowed_types & CredentialType.SSH_KEY:
            public = key.with_name(key.name + ".pub")
            return pygit2.Keypair(user, public if public.is_file() else None, key, "")
        if allowed_types & CredentialType.USERNAME:
            return pygit2.Username(user)
        raise GitAuthError(f"{safe} asks for a credential and none is configured")

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        self._check_cancel()
        # For SSH, libgit2 sets `valid` when the host key matches .ssh/known_hosts in its home
        # directory ($HOME; hashed entries and "[host]:port" work). A changed key arrives here
        # as not valid too. pygit2 passes no SSH host key (certificate is None), so known_hosts
        # is the only way to trust a host.
        if valid:
            return True
        name = host.decode(errors="replace")
        if _is_ssh(self._source.url):
            raise GitAuthError(f"unknown host key for {name}")
        raise GitAuthError(f"the TLS certificate of {name} failed verification")

    def transfer_progress(self, stats: pygit2.remotes.TransferProgress) -> None:
        self._check_cancel()
        self._watch.last_activity = time.monotonic()

    def sideband_progress(self, string: str) -> None:
        self._check_cancel()
        self._watch.last_activity = time.monotonic()

    def _check_cancel(self) -> None:
        # Raising from a callback is the only way to stop libgit2 mid-call.
        if self._watch.cancelled.is_set():
            raise GitUnavailable(f"call to {redact_url(self._source.url)} abandoned")


def _ls_remote(remote: pygit2.Remote, callbacks: _Callbacks) -> dict[str, str]:
    return {h.name: str(h.oid) for h in remote.list_heads(callbacks=callbacks) if h.name}


def _tracked_refs(branch: str, pin: str) -> set[str]:
    """The refs an app following `branch`, maybe pinned to `pin`, needs in the mirror.

    Its branch always: a pinned commit is reached through the branch it is on, and a tag
    spelt like an abbreviated commit is told from that commit only when the mirror holds
    it. A pin that is not a full SHA may be a tag: that tag too (a name the remote lacks
    is fetched as nothing).
    """
    refs = {f"refs/heads/{branch}"}
    if pin and not _FULL_SHA.fullmatch(pin):
        refs.add(f"refs/tags/{pin}")
    return refs


def _fetch(remote: pygit2.Remote, callbacks: _Callbacks, refspecs: list[str]) -> None:
    # PRUNE drops a fetched ref the remote no longer has (a deleted branch). Any ref of a
    # tag libgit2 follows on its own (tags on what it fetched) is left to _drop_refs.
    remote.fetch(refspecs, callbacks=callbacks, prune=FetchPrune.PRUNE)


def _drop_refs(repo: pygit2.Repository, *, keep: set[str]) -> None:
    """Delete the mirror's branches and tags but `keep`: those no app tracks any more, tags
    libgit2 followed, and every ref of a mirror made before fetches were limited to tracked
    refs. Their objects stay (the mirror is a cache, safe to delete); no fetch brings them
    up to date again."""
    for name in repo.references:
        if name.startswith(_MIRRORED) and name not in keep:
            repo.references.delete(name)


def _peel(repo: pygit2.Repository, rev: str) -> str | None:
    """The full SHA of the commit `rev` (a full or abbreviated object id) names, if present."""
    if not _FULL_SHA.fullmatch(rev) and not _SHORT_SHA.fullmatch(rev):
        return None
    try:
        found = repo.get(rev)
    except pygit2.AmbiguousError as exc:
        raise GitRevisionNotFound(f"revision '{rev}' is ambiguous; use more digits") from exc
    if found is None:
        return None
    try:
        return str(found.peel(pygit2.Commit).id)
    except (pygit2.GitError, ValueError) as exc:
        raise GitRevisionNotFound(f"revision '{rev}' does not name a commit") from exc


def _subject(repo: pygit2.Repository, rev: str) -> str | None:
    full = _peel(repo, rev)
    if full is None:
        return None
    raw = repo[full].peel(pygit2.Commit).raw_message
    first = raw.decode("utf-8", "replace").strip().split("\n", 1)[0]
    cleaned = _CONTROL_CHARS.sub("", first).strip()
    if len(cleaned) > SUBJECT_LIMIT:
        cleaned = cleaned[: SUBJECT_LIMIT - 1].rstrip() + "\u2026"
    return cleaned


def _committed(repo: pygit2.Repository, rev: str) -> int | None:
    full = _peel(repo, rev)
    if full is None:
        return None
    return int(repo[full].peel(pygit2.Commit).commit_time)


def _blob(repo: pygit2.Repository, commit: str, path: str) -> bytes | None:
    tree = repo[commit].peel(pygit2.Commit).tree
    try:
        entry = tree[_normal_path(path)]
    except KeyError:
        return None
    blob = repo[entry.id]
    if not isinstance(blob, pygit2.Blob):
        return None
    if blob.size > MAX_READ_BYTES:
        raise DefinitionError(f"{path}: larger than {MAX_READ_BYTES} bytes")
    return bytes(blob.data)


def _touches(tree: pygit2.Tree, parent: pygit2.Tree | None, paths: tuple[str, ...]) -> bool:
    """Whether `tree` differs from `parent` (None: the empty tree) at one of `paths`.

    Comparing the entries at each path (id and mode) instead of diffing whole trees costs a
    few lookups per commit and is directory-aware by construction: "svc/a" is an entry that
    covers "svc/a/x" and is unrelated to "svc/ab".
    """
    return any(_entry(tree, p) != (_entry(parent, p) if parent else None) for p in paths)


def _entry(tree: pygit2.Tree, path: str) -> tuple[pygit2.Oid, int] | None:
    if not path:
        return tree.id, 0
    try:
        found = tree[path]
    except KeyError:
        return None
    return found.id, found.filemode


def _normal_path(path: str) -> str:
    """'/svc/a/', './svc/a' and 'svc/a' are the same path; '.' is the whole repository."""
    return posixpath.normpath("/" + path.strip()).lstrip("/")


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise GitAuthError(f"cannot read git token file {path}: {exc.strerror}") from exc
    if not token:
        raise GitAuthError(f"git token file {path} is empty")
    return token


def _is_ssh(url: str) -> bool:
    if "://" in url:
        return url.split("://", 1)[0] in ("ssh", "git+ssh", "ssh+git")
    return ":" in url.split("/", 1)[0]  # scp-like host:path


def _scrub(text: str, secret: str | None) -> str:
    text = redact_urls_in(text)
    return text.replace(secret, "***") if secret else text


def _translate(exc: Exception, safe_url: str) -> ReconcilerError:
    """A pygit2 (or local OS) error as the project's error.

    Refused credentials and unverifiable hosts need a human; everything else (refused
    connections, timeouts, missing paths) may pass. libgit2 reports most failures as a plain
    GitError, so its message is what tells them apart.
    """
    text = str(exc)
    if isinstance(exc, pygit2.AuthError | pygit2.CertificateError) or (
        isinstance(exc, pygit2.GitError) and _AUTH_HINTS.search(text)
    ):
        return GitAuthError(f"{safe_url}: {text}")
    return GitUnavailable(f"{safe_url}: {text}")


def _retrieve(work: asyncio.Future[_T]) -> None:
    """Consume the outcome of an abandoned call, so asyncio does not log it as lost."""
    if not work.cancelled():
        work.exception()
