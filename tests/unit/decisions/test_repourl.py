"""Repository URLs: one comparable form per repository; credentials never shown or accepted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.decisions.repourl import has_credentials, normalise_repo_url, redact_url

FUZZ = settings(max_examples=300, deadline=None)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/web.git",
        "https://github.com/Acme/Web.git",
        "https://github.com/acme/web",
        "https://github.com/acme/web/",
        "https://github.com/acme/web.git/",
        "http://github.com/acme/web",
        "https://GitHub.com/acme/web",
        "https://github.com:443/acme/web.git",
        "http://github.com:80/acme/web.git",
        "https://user:token@github.com/acme/web.git",
        "https://token@github.com/acme/web.git",
        "git@github.com:acme/web.git",
        "git@github.com:Acme/Web.git",
        "github.com:acme/web.git",
        "ssh://git@github.com/acme/web",
        "ssh://git@github.com/acme/web.git",
        "ssh://git@github.com:22/acme/web.git",
        "git+ssh://git@github.com/acme/web.git",
        "git://github.com/acme/web.git",
        "git://github.com:9418/acme/web.git",
        "  https://github.com/acme/web.git\n",
        "https://github.com//acme/web",
    ],
)
def test_every_spelling_of_a_repository_normalises_to_one_key(url: str) -> None:
    """https, scp-like, ssh:// and git:// forms in any case, with or without port, user, .git."""
    assert normalise_repo_url(url) == "github.com/acme/web"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://gitlab.example.com/group/sub/project.git",
            "gitlab.example.com/group/sub/project",
        ),
        ("git@gitlab.example.com:Group/Sub/Project.git", "gitlab.example.com/group/sub/project"),
        (
            "ssh://git@gitlab.example.com:2222/group/project.git",
            "gitlab.example.com:2222/group/project",
        ),
        ("https://gitlab.example.com:8443/group/project", "gitlab.example.com:8443/group/project"),
        ("https://[2001:DB8::1]:8443/acme/web.git", "[2001:db8::1]:8443/acme/web"),
        ("git@[2001:db8::1]:acme/web.git", "[2001:db8::1]/acme/web"),
        ("git@github.com.:acme/web", "github.com/acme/web"),
    ],
)
def test_hosts_ports_and_subgroups_are_kept(url: str, expected: str) -> None:
    """A non-default port and nested group paths stay part of the key; only case is folded."""
    assert normalise_repo_url(url) == expected


def test_a_non_default_port_is_a_different_key() -> None:
    """Port 2222 may be a different server, so it does not match the default port."""
    assert normalise_repo_url("ssh://git@host:2222/a/b") != normalise_repo_url("ssh://git@host/a/b")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///srv/git/Web.git", "file:/srv/git/Web"),
        ("file:///srv/git/web/", "file:/srv/git/web"),
        ("file://localhost/srv/git/web.git", "file:/srv/git/web"),
        ("file:///srv/git/../git/web", "file:/srv/git/../git/web"),
    ],
)
def test_local_paths_keep_their_case_and_resolve_nothing(url: str, expected: str) -> None:
    """file:// URLs keep case (file systems are case-sensitive) and are not resolved."""
    assert normalise_repo_url(url) == expected


def test_a_local_path_never_matches_a_host() -> None:
    """file:///github.com/acme/web is a directory, not the GitHub repository."""
    assert normalise_repo_url("file:///github.com/acme/web") != normalise_repo_url(
        "https://github.com/acme/web"
    )


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "/srv/git/web.git",
        "./web",
        "web",
        "https://github.com",
        "https://github.com/",
        "https://github.com/.git",
        "https:///acme/web",
        "https://github.com:99999/acme/web",
        "https://github.com:http/acme/web",
        "https://github.com/acme/web?ref=main",
        "https://github.com/acme/web#main",
        "https://exa mple.com/acme/web",
        "https://github.com/acme/\x00web",
        "ftp://example.com/acme/web.git",
        "file://otherhost/srv/web",
        "file:///",
        "git@github.com:",
    ],
)
def test_what_is_not_a_git_url_is_refused_with_one_line(url: str) -> None:
    """Anything unparseable raises ValueError with a one-line message."""
    with pytest.raises(ValueError, match=r"^repository URL") as info:
        normalise_repo_url(url)
    assert "\n" not in str(info.value)


def test_a_refusal_never_shows_the_credential() -> None:
    """The error message for a bad URL names it without its token."""
    for url in (
        "https://user:s3cret@github.com:99999/acme/web",
        "https://s3cret@github.com/acme/web?x=1",
        "https://user:s3/cret@github.com/acme/web",
    ):
        with pytest.raises(ValueError) as info:
            normalise_repo_url(url)
        assert "s3" not in str(info.value), url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:tok@github.com/acme/web.git", "https://github.com/acme/web.git"),
        ("https://tok@github.com/acme/web.git", "https://github.com/acme/web.git"),
        ("https://user:p@ss@github.com/acme/web.git", "https://github.com/acme/web.git"),
        ("https://user:pa/ss@github.com/acme/web.git", "https://github.com/acme/web.git"),
        ("ssh://git:pw@host:2222/acme/web", "ssh://host:2222/acme/web"),
        ("https://github.com/acme/web.git", "https://github.com/acme/web.git"),
        ("https://[::1]:8443/a/@b", "https://[::1]:8443/a/@b"),
        ("git@github.com:acme/web.git", "git@github.com:acme/web.git"),
        ("not a url", "not a url"),
    ],
)
def test_redaction_strips_userinfo(url: str, expected: str) -> None:
    """Logs and errors show the URL without user:password@; scp-like forms carry no password."""
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:tok@github.com/acme/web.git", True),
        ("https://tok@github.com/acme/web.git", True),
        ("http://tok@example.com/acme/web.git", True),
        ("https://user:pa/ss@github.com/acme/web.git", True),
        ("ssh://git:pw@github.com/acme/web.git", True),
        ("HTTPS://tok@github.com/acme/web.git", True),
        ("https://github.com/acme/web.git", False),
        ("https://user:@github.com/acme/web.git", False),
        ("git@github.com:acme/web.git", False),
        ("ssh://git@github.com/acme/web.git", False),
        ("git://github.com/acme/web.git", False),
        ("file:///srv/git/web.git", False),
        ("https://github.com/acme/web@v1", False),
    ],
)
def test_credentials_in_the_url_are_detected(url: str, expected: bool) -> None:
    """A password or an HTTP(S) token is a credential; an SSH login name is not."""
    assert has_credentials(url) is expected


names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.",
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip(".") and not s.endswith(".git"))
# "~" appears in no host or name, so finding the token in a URL means the token leaked.
tokens = st.text(alphabet="abcXYZ019_-", min_size=4).map(lambda t: f"~{t}")
hosts = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,5}){0,2}", fullmatch=True)


@FUZZ
@given(host=hosts, owner=names, repo=names, token=tokens)
def test_all_forms_of_any_repository_agree(host: str, owner: str, repo: str, token: str) -> None:
    """For any host/owner/repo, the https, scp-like, ssh:// and web forms give one key."""
    forms = [
        f"https://{host}/{owner}/{repo}.git",
        f"https://{host}/{owner}/{repo}",
        f"https://x-access-token:{token}@{host}/{owner}/{repo}.git",
        f"git@{host}:{owner}/{repo}.git",
        f"ssh://git@{host}/{owner}/{repo}.git",
        f"ssh://git@{host}:22/{owner.upper()}/{repo}",
    ]
    assert {normalise_repo_url(form) for form in forms} == {
        f"{host}/{owner.lower()}/{repo.lower()}"
    }
    assert token not in redact_url(forms[2])
    assert has_credentials(forms[2])


@FUZZ
@given(st.text())
def test_any_text_is_normalised_or_refused_with_value_error(url: str) -> None:
    """Arbitrary text never escapes as anything but ValueError; redaction never raises."""
    try:
        key = normalise_repo_url(url)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert key == key.strip() and key
    redact_url(url)
    has_credentials(url)
