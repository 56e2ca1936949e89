"""`.dockerignore`: patterns read and matched the way Docker does (moby/patternmatcher).

Patterns are cleaned like paths, a leading `/` is dropped, `*`, `?` and `[...]` stay inside
one path segment, `**` spans segments, a pattern that matches a directory excludes everything
below it, later patterns win, and `!` re-includes.

Anyone who can push writes this file, so matching it must not be a way to stall the daemon:
there is no backtracking regular expression. Each pattern is one of Docker's four kinds.
Three are plain string comparisons; the fourth, a pattern with wildcards inside, is an NFA
whose set of live pattern positions is held as the bits of an int and advanced once per path
character, so the path is read once, left to right. A pattern is at most MAX_PATTERN
characters, which bounds each step: O(len(path) * len(pattern) / 64) machine words, plus
O(len(pattern)) the first time each distinct character is seen. The string kinds compare at
most len(pattern) characters at each '/' of the path, in C.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from reconciler.errors import BuildContextRefused

MAX_PATTERN = 1024
# Steps are cached per distinct path character; a tree can hold many distinct characters,
# so the cache is emptied when it grows past this.
_STEP_CACHE = 4096
# States after a directory's path, kept for the entries of that directory; emptied past this.
_DIRECTORY_CACHE = 4096
# What _Glob._read says when a parent directory of the path is matched (states are >= 0).
_COVERED = -1


@dataclass(frozen=True)
class DockerIgnore:
    """The patterns of one `.dockerignore`, in order."""

    patterns: tuple[_Pattern, ...] = ()

    @classmethod
    def parse(cls, text: str) -> DockerIgnore:
        """Read a `.dockerignore` the way Docker does; a bad pattern fails the build
        (BuildContextRefused)."""
        patterns = []
        for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
            if raw.startswith("#"):
                continue  # only a leading '#' starts a comment, as in Docker
            line = raw.strip()
            exception = line.startswith("!")
            if exception:
                line = line[1:].strip()
                if not line:
                    raise BuildContextRefused(f".dockerignore line {number}: '!' without a pattern")
            if not line:
                continue
            if len(line) > MAX_PATTERN:
                raise BuildContextRefused(
                    f".dockerignore line {number}: the pattern is {len(line)} characters long,"
                    f" over the limit of {MAX_PATTERN}"
                )
            line = _clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
            try:
                matcher = _compile(line)
            except BuildContextRefused as exc:
                raise BuildContextRefused(
                    f".dockerignore line {number}: bad pattern {raw!r}: {exc}"
                ) from exc
            patterns.append(_Pattern(matcher=matcher, exception=exception))
        return cls(tuple(patterns))

    @property
    def has_exceptions(self) -> bool:
        return any(p.exception for p in self.patterns)

    def excludes(self, path: str) -> bool:
        """Whether `path` (slash-separated, relative to the context) is left out.

        A pattern matches the path itself or any of its parent directories; the last
        matching pattern decides.
        """
        excluded = False
        for pattern in self.patterns:
            # As in Docker: an exclusion only matters while included, an exception only
            # while excluded, so skip the ones that cannot change the outcome.
            if pattern.exception != excluded:
                continue
            if pattern.matcher.covers(path):
                excluded = not pattern.exception
        return excluded


class _Matcher(Protocol):
    def covers(self, path: str) -> bool:
        """Whether the pattern matches `path` or one of its parent directories."""


@dataclass(frozen=True)
class _Pattern:
    matcher: _Matcher
    exception: bool


def _clean(pattern: str) -> str:
    """Go's filepath.Clean on a slash path (posixpath keeps a leading '//', Go does not)."""
    cleaned = posixpath.normpath(pattern)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


# --- Docker's four kinds of pattern ----------------------------------------------------------


@dataclass(frozen=True)
class _Exact:
    """No wildcard: the path or a parent is the pattern."""

    text: str

    def covers(self, path: str) -> bool:
        return path == self.text or path.startswith(self.text + "/")


@dataclass(frozen=True)
class _Prefix:
    """`head**` with no wildcard in `head`: anything starting with it."""

    head: str

    def covers(self, path: str) -> bool:
        # A parent starting with `head` means the path does too.
        return path.startswith(self.head)


@dataclass(frozen=True)
class _Suffix:
    """`**tail` with no wildcard in `tail`: anything ending with it (and `tail` itself
    without its leading '/'), Docker's fast path, string comparisons at each '/' of the path."""

    tail: str

    def covers(self, path: str) -> bool:
        bare = self.tail[1:] if self.tail.startswith("/") else None
        end = path.find("/")
        while True:
            stop = len(path) if end == -1 else end
            if path.endswith(self.tail, 0, stop):
                return True
            if bare is not None and stop == len(bare) and path.startswith(bare):
                return True
            if end == -1:
                return False
            end = path.find("/", end + 1)


@dataclass(frozen=True)
class _Literal:
    char: str

    def accepts(self, char: str) -> bool:
        return char == self.char


@dataclass(frozen=True)
class _Class:
    """One character of a `[...]` class (in `ranges`, or not when `negated`), never '/'.
    `?` is the empty class negated."""

    ranges: tuple[tuple[str, str], ...]
    negated: bool = False

    def accepts(self, char: str) -> bool:
        inside = any(lo <= char <= hi for lo, hi in self.ranges)
        return char != "/" and inside != self.negated


@dataclass(frozen=True)
class _Loop:
    """Any run of characters, maybe empty: `*` (no '/'), or `.*` (any)."""

    crosses_slash: bool


@dataclass(frozen=True)
class _Fork:
    """Where Docker's `**` before more pattern, `(.*/)?`, starts: it reads nothing itself;
    the path goes on either through the `.*` loop and the '/' after it, or past all three."""


_Position = _Literal | _Class | _Loop | _Fork
_ANY_DIRS = (_Fork(), _Loop(crosses_slash=True), _Literal("/"))


@dataclass
class _Glob:
    """A pattern with wildcards as an NFA over its positions.

    Bit j of a state means "the path read so far matches the first j positions". Each path
    character costs a few operations on ints of len(positions) + 1 bits and one dictionary
    look-up, and no character is read twice: O(len(path) * len(pattern) / 64) words.

    Most paths of a tree are settled before that, in C: whatever the pattern matches starts
    with its leading literal characters, ends with its trailing ones (`.md` in `**/*.md`) and
    holds its longest run of them (`.sw` in `*.sw?`), so a path that does not start with the
    head, neither ends with the tail nor has it before a '/', or lacks the run, is not covered.
    """

    positions: tuple[_Position, ...]
    _head: str = field(init=False)
    _tail: str = field(init=False)
    _needle: str = field(init=False)
    _accept: int = field(init=False)
    _skip_one: int = field(init=False)
    _skip_three: int = field(init=False)
    _rounds: int = field(init=False)
    _start: int = field(init=False)
    _steps: dict[str, tuple[int, int]] = field(init=False, default_factory=dict)
    _directories: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        forks = [j for j, p in enumerate(self.positions) if isinstance(p, _Fork)]
        loops = [j for j, p in enumerate(self.positions) if isinstance(p, _Loop)]
        self._accept = 1 << len(self.positions)
        self._skip_one = sum(1 << j for j in forks + loops)
        self._skip_three = sum(1 << j for j in forks)
        # Closing a state over the skips takes one round per skip in the longest chain of
        # them; `_compile` merges repeated `**`, so this is at most 2.
        chain = [0] * (len(self.positions) + 3)
        for j in reversed(range(len(self.positions))):
            if j in forks:
                chain[j] = 1 + max(chain[j + 1], chain[j + 3])
            elif j in loops:
                chain[j] = 1 + chain[j + 1]
        self._rounds = max(chain)
        self._start = self._close(1)
        runs = _literal_runs(self.positions)
        self._head = next((chars for start, chars in runs if start == 0), "")
        self._tail = next(
            (chars for start, chars in runs if start + len(chars) == len(self.positions)), ""
        )
        self._needle = max((chars for _, chars in runs), key=len, default="")

    def covers(self, path: str) -> bool:
        tail = self._tail
        if (
            not path.startswith(self._head)
            or (tail and not path.endswith(tail) and tail + "/" not in path)
            or self._needle not in path
        ):
            return False
        # The entries of one directory share its path up to the last '/': the state after
        # it is kept, so each entry costs the characters of its own name.
        cut = path.rfind("/") + 1
        if cut:
            directory = path[:cut]
            state = self._directories.get(directory)
            if state is None:
                state = self._read(self._start, directory)
                if len(self._directories) >= _DIRECTORY_CACHE:
                    self._directories.clear()
                self._directories[directory] = state
            if state > 0:
                state = self._read(state, path[cut:])
        else:
            state = self._read(self._start, path)
        return state == _COVERED or bool(state & self._accept)

    def _read(self, state: int, text: str) -> int:
        """The state after reading `text` from `state`: 0 once nothing can match, _COVERED
        at a '/' reached with the text so far matched (a parent directory is covered)."""
        accept, steps, one, three = self._accept, self._steps, self._skip_one, self._skip_three
        rounds = range(self._rounds)
        for char in text:
            if char == "/" and state & accept:
                return _COVERED
            advance, stay = steps.get(char) or self._step(char)
            state = ((state & advance) << 1) | (state & stay)
            for _ in rounds:
                state |= ((state & one) << 1) | ((state & three) << 3)
            if not state:
                return 0
        return state

    def _close(self, state: int) -> int:
        for _ in range(self._rounds):
            state |= ((state & self._skip_one) << 1) | ((state & self._skip_three) << 3)
        return state

    def _step(self, char: str) -> tuple[int, int]:
        """The positions `char` moves past (`advance`) and the loops it stays in (`stay`)."""
        advance = stay = 0
        for j, position in enumerate(self.positions):
            if isinstance(position, _Loop):
                if position.crosses_slash or char != "/":
                    stay |= 1 << j
            elif isinstance(position, _Fork):
                continue
            elif position.accepts(char):
                advance |= 1 << j
        if len(self._steps) >= _STEP_CACHE:
            self._steps.clear()
        self._steps[char] = (advance, stay)
        return advance, stay


def _literal_runs(positions: Sequence[_Position]) -> list[tuple[int, str]]:
    """The runs of literal positions, each as (where it starts, its characters). The '/' of
    a `**` (a fork, a loop, then '/') is no literal: the fork may skip it."""
    runs: list[tuple[int, str]] = []
    for j, position in enumerate(positions):
        if not isinstance(position, _Literal) or (j >= 2 and isinstance(positions[j - 2], _Fork)):
            continue
        if runs and runs[-1][0] + len(runs[-1][1]) == j:
            runs[-1] = (runs[-1][0], runs[-1][1] + position.char)
        else:
            runs.append((j, position.char))
    return runs


def _compile(pattern: str) -> _Matcher:
    """One cleaned pattern, scanned as moby/patternmatcher scans it to pick its kind.

    Classes follow Go's filepath.Match syntax, which Docker checks every pattern against.
    Raises BuildContextRefused (the reason only) for a pattern Docker refuses.
    """
    positions: list[_Position] = []
    kind = "exact"
    i = 0
    while i < len(pattern):
        start, char = i, pattern[i]
        i += 1
        if char == "*" and pattern.startswith("*", i):
            i, kind = _double_star(pattern, i + 1, kind=kind, positions=positions)
            if start == 0:
                kind = "suffix"
            continue
        position, i = _position(pattern, char, i)
        positions.append(position)
        if not isinstance(position, _Literal) or char in "\\]":
            kind = "glob"  # as in Docker, an escape or a lone ']' also needs the matcher
    if kind == "exact":
        return _Exact(pattern)
    if kind == "prefix":
        return _Prefix(pattern[:-2])
    if kind == "suffix":
        return _Suffix(pattern[2:])
    return _Glob(tuple(positions))


def _double_star(pattern: str, i: int, *, kind: str, positions: list[_Position]) -> tuple[int, str]:
    """Add the `**` ending just before `i`; the index after it and the pattern's kind so far."""
    if pattern.startswith("/", i):
        i += 1  # "**/" is "**"
    if i < len(pattern):
        if tuple(positions[-3:]) != _ANY_DIRS:  # "(.*/)?(.*/)?" is "(.*/)?"
            positions.extend(_ANY_DIRS)
        return i, "glob"
    if tuple(positions[-3:]) == _ANY_DIRS:
        del positions[-3:]  # "(.*/)?.*" is ".*"
    positions.append(_Loop(crosses_slash=True))
    return i, "prefix" if kind == "exact" else "glob"


def _position(pattern: str, char: str, i: int) -> tuple[_Position, int]:
    """The position `char` (just before `i`) starts, and the index after it."""
    if char == "*":
        return _Loop(crosses_slash=False), i
    if char == "?":
        return _Class((), negated=True), i
    if char == "[":
        return _class(pattern, i)
    if char == "\\":
        if i == len(pattern):
            raise BuildContextRefused("a trailing '\\' escapes nothing")
        return _Literal(pattern[i]), i + 1
    return _Literal(char), i


def _class(pattern: str, i: int) -> tuple[_Class, int]:
    """The class whose '[' ends just before `i`, and the index past its ']'.

    `^` first negates; items are characters or `lo-hi` ranges, `\\` escapes one; a '-' or
    ']' where an item starts, a reversed range and a missing ']' are refused.
    """
    negated = pattern.startswith("^", i)
    if negated:
        i += 1
    ranges: list[tuple[str, str]] = []
    while not (pattern.startswith("]", i) and ranges):
        lo, i = _class_char(pattern, i)
        hi = lo
        if pattern.startswith("-", i):
            hi, i = _class_char(pattern, i + 1)
        if hi < lo:
            raise BuildContextRefused(f"the range '{lo}-{hi}' is reversed")
        ranges.append((lo, hi))
    return _Class(tuple(ranges), negated=negated), i + 1


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    if i == len(pattern):
        raise BuildContextRefused("a '[' without its ']'")
    char = pattern[i]
    if char in "-]":
        raise BuildContextRefused(f"a '{char}' where a character class needs a character")
    if char == "\\":
        i += 1
        if i == len(pattern):
            raise BuildContextRefused("a '[' without its ']'")
        char = pattern[i]
    return char, i + 1
