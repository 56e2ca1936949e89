"""The tokens file: named identities with a role and app globs, holding only SHA-256 hashes.

```toml
[[token]]                 # one per person or machine that calls the admin listener
name = "alice"
role = "operator"         # viewer | operator | admin
apps = ["web-*"]          # globs over app names; default ["*"]; an admin acts on every app
sha256 = "9f86d0..."      # of the token, which `reconciler token add` prints once

[[user]]                  # a name a trusted proxy vouches for in X-Forwarded-User
name = "bob@example.com"
role = "viewer"
```

The file is read again whenever its size or modification time changes, so a token added or
revoked applies to the next request without a restart. A file that does not parse is logged
and the last good one stays in force; a daemon that never read a good one knows no identity.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import structlog
import tomli_w
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from reconciler.adapters.files import write_atomically
from reconciler.decisions.access import Identity, Role, matches_hash, token_sha256
from reconciler.errors import ConfigError

log = structlog.get_logger("reconciler.auth")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._+-]{0,127}$")
_GLOB = re.compile(r"^[A-Za-z0-9*?\[\]!._-]{1,128}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is no name (letters, digits, @._+-; at most 128)")
    return value


def _globs(value: list[str]) -> list[str]:
    for glob in value:
        if not _GLOB.match(glob):
            raise ValueError(f"{glob!r} is no app glob (letters, digits, -_. and * ? [ ] !)")
    return value


def _hash(value: str) -> str:
    if not _SHA256.match(value.lower()):
        raise ValueError("sha256 must be 64 hex digits (the token's SHA-256, not the token)")
    return value.lower()


Name = Annotated[str, AfterValidator(_name)]
Globs = Annotated[list[str], AfterValidator(_globs)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    role: Literal["viewer", "operator", "admin"]
    apps: Globs = Field(default_factory=lambda: ["*"])

    def identity(self, via: str) -> Identity:
        return Identity(self.name, Role.named(self.role), tuple(self.apps), via)


class TokenEntry(_Entry):
    sha256: Annotated[str, AfterValidator(_hash)]


class UserEntry(_Entry):
    pass


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: list[TokenEntry] = Field(default_factory=list)
    user: list[UserEntry] = Field(default_factory=list)

    def problems(self) -> list[str]:
        found: list[str] = []
        for kind, entries in (("token", self.token), ("user", self.user)):
            names = [e.name for e in entries]
            found += [
                f"{kind} {n!r} is named twice" for n in sorted(set(names)) if names.count(n) > 1
            ]
            found += [
                f"{kind} {e.name!r}: an admin acts on every app; leave apps out"
                for e in entries
                if e.role == "admin" and e.apps != ["*"]
            ]
        hashes = [e.sha256 for e in self.token]
        if len(set(hashes)) != len(hashes):
            found.append("two tokens have the same sha256")
        return found


def parse_tokens(text: str, *, where: str) -> TokensFile:
    """The tokens file's entries; ConfigError with one line per problem."""
    try:
        parsed = TokensFile.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{where}: not TOML: {exc}"]) from None
    except ValidationError as exc:
        raise ConfigError([_line(where, error) for error in exc.errors()]) from None
    problems = parsed.problems()
    if problems:
        raise ConfigError([f"{where}: {p}" for p in problems])
    return parsed


def _line(where: str, error: object) -> str:
    assert isinstance(error, dict)
    location = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {location}: {message}"


@dataclass(frozen=True)
class _Seen:
    size: int
    mtime_ns: int


class Tokens:
    """The identities of a tokens file, read again when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: _Seen | None = None
        self._file = TokensFile()
        self._hashes: list[str] = []
        self._problem: str | None = None

    def by_token(self, token: str) -> Identity | None:
        self._refresh()
        index = matches_hash(token, self._hashes)
        return None if index is None else self._file.token[index].identity("token")

    def by_hash(self, sha256: str, *, via: str) -> Identity | None:
        """The identity whose token hashes to `sha256` (a session's), while it is still there."""
        self._refresh()
        for entry in self._file.token:
            if entry.sha256 == sha256:
                return entry.identity(via)
        return None

    def user(self, name: str) -> Identity | None:
        """A name a trusted proxy vouched for, when the file has a [[user]] of it."""
        self._refresh()
        for entry in self._file.user:
            if entry.name == name:
                return entry.identity("proxy")
        return None

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
            seen = _Seen(stat.st_size, stat.st_mtime_ns)
            if seen == self._seen:
                return
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._seen = None
            self._say(f"cannot read: {exc}", "tokens_file_unreadable")
            return
        self._seen = seen
        try:
            parsed = parse_tokens(text, where=str(self.path))
        except ConfigError as exc:
            self._say("; ".join(exc.problems), "tokens_file_invalid")
            return  # the last good file stays in force
        self._file = parsed
        self._hashes = [entry.sha256 for entry in parsed.token]
        self._problem = None
        log.info(
            "tokens_file_read",
            path=str(self.path),
            tokens=len(parsed.token),
            users=len(parsed.user),
        )

    def _say(self, problem: str, event: str) -> None:
        """Log a problem with the file once, not at every request that finds it."""
        if problem != self._problem:
            self._problem = problem
            log.error(event, path=str(self.path), problem=problem)


class SingleToken:
    """One admin token in a file of its own (`<state_dir>/admin.token`, or the deprecated
    `api_token_file`), read again when it changes."""

    def __init__(self, path: Path, *, name: str) -> None:
        self.path = path
        self._name = name

    def by_token(self, token: str) -> Identity | None:
        return self._identity("token") if matches_hash(token, [self._hash()]) == 0 else None

    def by_hash(self, sha256: str, *, via: str) -> Identity | None:
        return self._identity(via) if sha256 == self._hash() else None

    def user(self, name: str) -> Identity | None:
        return None

    def _identity(self, via: str) -> Identity:
        return Identity(self._name, Role.ADMIN, ("*",), via)

    def _hash(self) -> str:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return ""
        return token_sha256(token) if token else ""


def make_admin_token(path: Path) -> str | None:
    """Write a new admin token to `path` (mode 0600) unless one is there; the token when it
    was made now, None when the file existed."""
    token = secrets.token_urlsafe(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return token


def add_token(path: Path, *, name: str, role: str, apps: Sequence[str]) -> str:
    """Add a token named `name` to the tokens file at `path` (made when missing) and return
    the token, which is stored nowhere but as its hash. ConfigError when the file is bad or
    the entry would make it so; the file is then left as it was."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    parsed = parse_tokens(existing, where=str(path))
    token = secrets.token_urlsafe(32)
    entry = {"name": name, "role": role, "apps": list(apps) or ["*"], "sha256": token_sha256(token)}
    document = parsed.model_dump(mode="json")
    document["token"] = [*document["token"], entry]
    _write(path, parse_tokens(tomli_w.dumps(document), where=str(path)))
    return token


def revoke_token(path: Path, name: str) -> bool:
    """Remove the token named `name`; whether there was one."""
    parsed = parse_tokens(path.read_text(encoding="utf-8"), where=str(path))
    kept = [entry for entry in parsed.token if entry.name != name]
    if len(kept) == len(parsed.token):
        return False
    _write(path, TokensFile(token=kept, user=parsed.user))
    return True


def _write(path: Path, parsed: TokensFile) -> None:
    # An empty list is left out: written as `user = []`, it would bar a [[user]] table an
    # operator adds by hand below it.
    document = {key: value for key, value in parsed.model_dump(mode="json").items() if value}
    write_atomically(path, tomli_w.dumps(document).encode())
