"""Git repository URLs: one comparable form per repository, and credential hygiene.

The same repository reaches us spelt many ways. An app's `repo` may say
`https://github.com/acme/web.git` while a GitHub push names `git@github.com:Acme/Web.git`,
`ssh://git@github.com/acme/web` and `https://github.com/Acme/Web`. `normalise_repo_url` maps
all of them to `github.com/acme/web` so a webhook can be matched to the apps it concerns.

The normal form is a key for comparison, not a URL to fetch: the scheme, the user and any
default port are gone. Local repositories keep a `file:` prefix so that a path can never be
mistaken for a host.

Pure functions: no I/O, nothing resolved, nothing looked up.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["api_host", "has_credentials", "normalise_repo_url", "redact_url", "redact_urls_in"]

# Ports a scheme implies. An explicit default port names the same server, so it is dropped;
# any other port stays part of the key (it may be a different server).
_DEFAULT_PORTS = {
    "https": 443,
    "http": 80,
    "ssh": 22,
    "git+ssh": 22,
    "ssh+git": 22,
    "git": 9418,
}

# Schemes where a user name alone authenticates (`https://<token>@github.com/...`). Over SSH the
# user name is only the login (`ssh://git@host/...`), and the key is kept elsewhere.
_TOKEN_IN_USERNAME_SCHEMES = frozenset({"http", "https"})

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)

# scp-like syntax, as git reads it: `[user@]host:path`, with no slash before the first colon.
_SCP_LIKE = re.compile(
    r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^@/:\[\]]+):(?P<path>.*)$",
    re.DOTALL,
)

_HOSTNAME = re.compile(r"^[a-z0-9_](?:[a-z0-9._-]*[a-z0-9_])?$")

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def normalise_repo_url(url: str) -> str:
    """The comparable form of a git URL: `host[:port]/owner/repo`, or `file:/path`.

    The host is lowercased; userinfo, default ports, a trailing `.git` and trailing slashes are
    dropped. The path is lowercased too: GitHub, GitLab and Bitbucket treat owner and repository
    names case-insensitively, and the worst a false match can do is cause one extra pass. For
    `file://` URLs the path keeps its case and nothing is resolved.

    Raises ValueError, with a one-line message that never shows credentials, for anything that
    is not an https, http, ssh, git or file URL or scp-like `user@host:path`.
    """
    text = url.strip()
    if not text:
        raise ValueError("repository URL is empty")
    if _CONTROL_CHARS.search(text):
        raise _invalid(url, "contains control characters")

    scheme_match = _SCHEME.match(text)
    if scheme_match is None:
        return _normalise_scp_like(url, text)

    scheme = scheme_match["scheme"].lower()
    if scheme == "file":
        return _normalise_file(url, text)
    if scheme not in _DEFAULT_PORTS:
        raise _invalid(url, f"uses unsupported scheme {scheme!r} (use https, ssh, git or file)")

    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise _invalid(url, "has an invalid port or host") from exc
    if parts.query or parts.fragment:
        raise _invalid(url, "has a query or fragment, which git URLs do not use")

    host = _host(url, parts.hostname)
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{host}/{_repo_path(url, parts.path)}"


def redact_url(url: str) -> str:
    """`url` without the userinfo of a scheme URL, fit for logs and error messages.

    `https://user:token@host/x` becomes `https://host/x`. scp-like addresses (`git@host:x`)
    cannot carry a password and are returned unchanged. Never raises.
    """
    url = url.strip()
    match = _SCHEME.match(url)
    if match is None:
        return url
    userinfo, remainder = _split_userinfo(match["rest"])
    if userinfo is None:
        return url
    return f"{match['scheme']}://{remainder}"


_EMBEDDED_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s]*@")


def redact_urls_in(text: str) -> str:
    """`text` (an error message, say) with the userinfo of every scheme URL in it removed."""
    return _EMBEDDED_USERINFO.sub(r"\1", text)


def has_credentials(url: str) -> bool:
    """Whether `url` embeds a secret: a password, or a token as the user name over HTTP(S).

    `https://user:token@host/x` and `https://token@host/x` do; `git@host:x` and
    `ssh://git@host/x` do not, the user name being only the SSH login. Never raises.
    """
    match = _SCHEME.match(url.strip())
    if match is None:
        return False
    userinfo, _ = _split_userinfo(match["rest"])
    if userinfo is None:
        return False
    user, colon, password = userinfo.partition(":")
    if colon:
        return password != ""
    return user != "" and match["scheme"].lower() in _TOKEN_IN_USERNAME_SCHEMES


_WEB_PORTS = {"https": 443, "http": 80}


def api_host(api_url: str) -> str:
    """`host[:port]` of a forge's API URL, spelt as `normalise_repo_url` spells hosts: the
    host a repository URL must name to live on that forge (GitHub Enterprise serves its API
    at `https://HOST/api/v3` and its repositories on HOST)."""
    try:
        parts = urlsplit(api_url)
        port = parts.port
    except ValueError:
        return ""
    host = (parts.hostname or "").lower().removesuffix(".")
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _WEB_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    return host


def _normalise_scp_like(url: str, text: str) -> str:
    match = _SCP_LIKE.match(text)
    if match is None:
        raise _invalid(url, "is neither a URL (scheme://...) nor scp-like user@host:path")
    host = _host(url, match["host"].removeprefix("[").removesuffix("]"))
    return f"{host}/{_repo_path(url, match['path'])}"


def _normalise_file(url: str, text: str) -> str:
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise _invalid(url, "cannot be parsed as a URL") from exc
    if parts.netloc not in ("", "localhost"):
        raise _invalid(url, "names a remote host; file URLs must be local (file:///path)")
    if parts.query or parts.fragment:
        raise _invalid(url, "has a query or fragment, which git URLs do not use")
    if not parts.path.startswith("/"):
        raise _invalid(url, "needs an absolute path (file:///path)")
    path = _strip_repo_suffix(parts.path)
    if not path:
        raise _invalid(url, "has no repository path")
    return f"file:{path}"


def _host(url: str, hostname: str | None) -> str:
    if not hostname:
        raise _invalid(url, "has no host")
    hostname = hostname.lower().removesuffix(".")  # "github.com." is github.com
    if ":" in hostname:  # IPv6 literal
        if not re.fullmatch(r"[0-9a-f:.]+", hostname):
            raise _invalid(url, "has an invalid IPv6 host")
        return f"[{hostname}]"
    if not _HOSTNAME.match(hostname):
        raise _invalid(url, "has an invalid host name")
    return hostname


def _repo_path(url: str, path: str) -> str:
    # `ssh://host/acme/web` and `host:acme/web` name the same repository on every hosting
    # service, so the leading slash is not significant here.
    path = re.sub(r"/{2,}", "/", path).strip("/")
    path = _strip_repo_suffix(path).lower()
    if not path:
        raise _invalid(url, "has no repository path")
    return path


def _strip_repo_suffix(path: str) -> str:
    path = path.rstrip("/")
    path = path.removesuffix(".git")
    return path.rstrip("/")


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """Split what follows `scheme://` into the userinfo (None if absent) and the rest.

    The authority ends at the first `/`, `?` or `#`, and the userinfo at its last `@`, as
    urllib and curl read it. A password with a raw `/` ends the authority early and leaves
    `user:pa` looking like host and port; since that port is not a number, the first `@`
    later on is taken as the end of the userinfo instead, so the secret is still found.
    """
    end = re.search(r"[/?#]", rest)
    authority = rest if end is None else rest[: end.start()]
    if "@" in authority:
        at = authority.rindex("@")  # the authority is a prefix of `rest`
        return rest[:at], rest[at + 1 :]
    _, colon, port = authority.rpartition(":")
    if colon and not port.isdigit() and not authority.startswith("[") and "@" in rest:
        at = rest.index("@")
        return rest[:at], rest[at + 1 :]
    return None, rest


def _invalid(url: str, problem: str) -> ValueError:
    shown = _CONTROL_CHARS.sub("?", redact_url(url))
    return ValueError(f"repository URL {shown!r} {problem}")
