"""Webhook deliveries: who may nudge, what a delivery says, and which apps it nudges.

Payloads are real deliveries (tests/fixtures/webhooks/README.md says where they come from).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.api.webhooks import (
    PushEvent,
    WebhookRejected,
    check_body_size,
    matches,
    parse_github,
    parse_gitlab,
    verify_github_signature,
    verify_gitlab_token,
)
from reconciler.decisions.repourl import normalise_repo_url
from tests.support.webhooks import fixture, hmac_hex, signature

FUZZ = settings(max_examples=300, deadline=None)

SECRET = b"It's a Secret to Everybody"


def rejected(
    status: int, reason: str
) -> AbstractContextManager[pytest.ExceptionInfo[WebhookRejected]]:
    return pytest.raises(WebhookRejected, check=lambda e: (e.status, e.reason) == (status, reason))


def github_push(**changes: object) -> bytes:
    payload = json.loads(fixture("github/push-with-new-branch.payload.json"))
    payload.update(changes)
    return json.dumps(payload).encode()


# --- GitHub signatures -------------------------------------------------------------------------


def test_githubs_published_test_vector_verifies() -> None:
    """The example in GitHub's docs ("Hello, World!" under its secret) is accepted."""
    verify_github_signature(
        secret=SECRET,
        body=b"Hello, World!",
        header="sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    )


def test_a_signed_real_delivery_verifies() -> None:
    """A real push body with its HMAC-SHA256 header is accepted."""
    body = fixture("github/push-with-new-branch.payload.json")
    verify_github_signature(secret=b"s3cret", body=body, header=signature(body, b"s3cret"))


def test_hex_digits_are_accepted_in_either_case() -> None:
    """The hex digest compares as bytes, so upper-case hex is the same signature."""
    body = b"Hello, World!"
    upper = "sha256=" + hmac_hex(body, SECRET).upper()
    verify_github_signature(secret=SECRET, body=body, header=upper)


def test_a_changed_body_fails_the_signature() -> None:
    """A bad signature gets 401 and nudges nothing: one byte changed in the body is enough."""
    body = fixture("github/push-with-new-branch.payload.json")
    header = signature(body, b"s3cret")
    with rejected(401, "bad_signature"):
        verify_github_signature(
            secret=b"s3cret", body=body.replace(b"master", b"mastes"), header=header
        )


def test_a_signature_made_with_another_secret_is_refused() -> None:
    """A delivery signed with the wrong secret gets 401 bad_signature."""
    body = b"Hello, World!"
    with rejected(401, "bad_signature"):
        verify_github_signature(secret=SECRET, body=body, header=signature(body, b"not the secret"))


def test_the_sha1_signature_is_refused() -> None:
    """The legacy X-Hub-Signature (sha1=) form is not accepted, even when correct."""
    body = b"Hello, World!"
    sha1 = "sha1=" + hmac_hex(body, SECRET, algorithm="sha1")
    with rejected(401, "bad_signature"):
        verify_github_signature(secret=SECRET, body=body, header=sha1)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17ff",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1g",
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha512=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17,sha256=00",
        "sha256=\uff17\uff15\uff17107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    ],
    ids=[
        "missing",
        "empty",
        "no-digest",
        "truncated",
        "too-long",
        "non-hex",
        "no-prefix",
        "sha512",
        "two-values",
        "fullwidth-digits",
    ],
)
def test_a_missing_or_malformed_signature_is_refused(header: str | None) -> None:
    """Missing, truncated, over-long, non-hex or unprefixed signatures get 401 bad_signature."""
    with rejected(401, "bad_signature"):
        verify_github_signature(secret=SECRET, body=b"Hello, World!", header=header)


@pytest.mark.parametrize("secret", [None, b""])
def test_without_a_configured_secret_every_delivery_is_refused(secret: bytes | None) -> None:
    """No secret configured: 401 no_secret, even for a signature made with an empty key."""
    body = b"Hello, World!"
    with rejected(401, "no_secret"):
        verify_github_signature(secret=secret, body=body, header=signature(body, b""))


def test_a_refusal_never_reveals_the_secret_or_the_expected_signature() -> None:
    """The message returned to the client holds neither the secret nor the right digest."""
    body = b"Hello, World!"
    with pytest.raises(WebhookRejected) as info:
        verify_github_signature(secret=SECRET, body=body, header="sha256=" + "0" * 64)
    message = str(info.value)
    assert "Secret" not in message
    assert signature(body, SECRET)[7:] not in message
    assert "\n" not in message


# --- GitLab tokens -----------------------------------------------------------------------------


def test_the_configured_gitlab_token_is_accepted() -> None:
    """X-Gitlab-Token equal to the configured token passes."""
    verify_gitlab_token(token=b"glhook-s3cret", header="glhook-s3cret")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "glhook-s3cre",
        "glhook-s3cret ",
        "glhook-s3cretx",
        "GLHOOK-S3CRET",
        "glhook-s3crét",
    ],
    ids=["missing", "empty", "prefix", "trailing-space", "longer", "other-case", "non-ascii"],
)
def test_any_other_gitlab_token_is_refused(header: str | None) -> None:
    """A missing or different X-Gitlab-Token gets 401 bad_signature and nudges nothing."""
    with rejected(401, "bad_signature"):
        verify_gitlab_token(token=b"glhook-s3cret", header=header)


@pytest.mark.parametrize("token", [None, b""])
def test_without_a_configured_gitlab_token_every_delivery_is_refused(token: bytes | None) -> None:
    """No token configured: 401 no_secret, even when the header is empty too."""
    with rejected(401, "no_secret"):
        verify_gitlab_token(token=token, header="")


def test_a_token_refusal_never_echoes_the_token() -> None:
    """The message names the header, not the value configured or sent."""
    with pytest.raises(WebhookRejected) as info:
        verify_gitlab_token(token=b"glhook-s3cret", header="glhook-guess")
    assert "s3cret" not in str(info.value)
    assert "guess" not in str(info.value)


# --- body size ---------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_with_413() -> None:
    """Over max_body_bytes: 413 too_large; at the limit, or of unknown size, it is read."""
    with rejected(413, "too_large"):
        check_body_size(size=5_000_001, limit=5_000_000)
    check_body_size(size=5_000_000, limit=5_000_000)
    check_body_size(size=None, limit=5_000_000)


# --- GitHub payloads ---------------------------------------------------------------------------


def test_a_github_push_names_the_repository_and_branch() -> None:
    """A branch push gives the branch, the pushed commit and every URL of the repository."""
    event = parse_github("push", fixture("github/push-with-new-branch.payload.json"))
    assert event == PushEvent(
        repo_urls=frozenset({"github.com/codertocat/hello-world"}),
        branch="master",
        deleted=False,
        after="6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    )


def test_a_deleted_tag_nudges_no_app() -> None:
    """A tag deletion has no branch and is marked deleted; it matches no app."""
    event = parse_github("push", fixture("github/push-tag-deleted.payload.json"))
    assert isinstance(event, PushEvent)
    assert event.branch is None
    assert event.deleted
    repo = "https://github.com/Codertocat/Hello-World.git"
    assert not matches(event, repo_url=repo, branch="simple-tag")
    assert not matches(event, repo_url=repo, branch="master")


def test_a_deleted_branch_nudges_no_app() -> None:
    """Deleting the tracked branch is not a reason to start a pass from the webhook."""
    body = github_push(deleted=True, after="0" * 40)
    event = parse_github("push", body)
    assert isinstance(event, PushEvent)
    assert event.deleted
    assert not matches(event, repo_url="https://github.com/codertocat/hello-world", branch="master")


def test_a_ping_is_answered_without_reading_the_body() -> None:
    """`ping` is recognised as such (the HTTP layer answers 200), whatever its body."""
    assert parse_github("ping", fixture("github/ping.payload.json")) == "ping"
    assert parse_github("ping", b"not json") == "ping"


@pytest.mark.parametrize("event", ["issues", "pull_request", "Push", "workflow_run", ""])
def test_other_github_events_are_ignored(event: str) -> None:
    """Events other than push and ping give None, and their body is not even parsed."""
    assert parse_github(event, fixture("github/push-with-new-branch.payload.json")) is None
    assert parse_github(event, b"\xff not json") is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"not json",
        b"\xff\xfe\x00",
        b"[]",
        b'"push"',
        b"null",
        b"[" * 100_000,
        b'{"ref": ' + b"1" * 5_000 + b"}",
        b'{"ref": "refs/heads/main"}',
        b'{"ref": "refs/heads/main", "repository": "acme/web"}',
        b'{"ref": "refs/heads/main", "repository": {}}',
        b'{"ref": "refs/heads/main", "repository": {"clone_url": "not a url"}}',
        b'{"ref": 7, "repository": {"clone_url": "https://github.com/acme/web.git"}}',
        b'{"repository": {"clone_url": "https://github.com/acme/web.git"}}',
        b'{"ref": "refs/heads/main", "deleted": "no", '
        b'"repository": {"clone_url": "https://github.com/acme/web.git"}}',
        b'{"ref": "refs/heads/main", "after": 1, '
        b'"repository": {"clone_url": "https://github.com/acme/web.git"}}',
    ],
    ids=lambda body: body[:40].decode("utf-8", "replace"),
)
def test_a_malformed_push_gets_400(body: bytes) -> None:
    """Bad JSON, a non-object, or a push without a ref or a usable repository: 400 malformed."""
    with rejected(400, "malformed") as info:
        parse_github("push", body)
    assert "\n" not in str(info.value)


def test_a_delivery_without_an_event_header_gets_400() -> None:
    """Without X-GitHub-Event there is no telling what the body is: 400 malformed."""
    with rejected(400, "malformed"):
        parse_github(None, fixture("github/push-with-new-branch.payload.json"))


def test_the_smallest_useful_push_is_read() -> None:
    """Only ref and one repository URL are needed; `after` and `deleted` may be absent."""
    body = b'{"ref": "refs/heads/main", "repository": {"ssh_url": "git@github.com:acme/web.git"}}'
    assert parse_github("push", body) == PushEvent(
        repo_urls=frozenset({"github.com/acme/web"}), branch="main", deleted=False, after=""
    )


def test_a_branch_with_slashes_keeps_them() -> None:
    """refs/heads/release/1.2 is the branch release/1.2; other refs have no branch."""
    event = parse_github("push", github_push(ref="refs/heads/release/1.2"))
    assert isinstance(event, PushEvent)
    assert event.branch == "release/1.2"
    for ref in ("refs/tags/v1", "refs/notes/commits", "refs/heads/", "main"):
        other = parse_github("push", github_push(ref=ref))
        assert isinstance(other, PushEvent)
        assert other.branch is None, ref


# --- GitLab payloads ---------------------------------------------------------------------------


def test_a_gitlab_push_names_the_repository_and_branch() -> None:
    """A Push Hook gives the branch, the pushed commit and the project's URLs."""
    event = parse_gitlab("Push Hook", fixture("gitlab/push.payload.json"))
    assert event == PushEvent(
        repo_urls=frozenset({"example.com/mike/diaspora"}),
        branch="master",
        deleted=False,
        after="da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
    )


def test_a_gitlab_tag_push_nudges_no_app() -> None:
    """A Tag Push Hook has no branch, so no app tracking a branch is nudged."""
    event = parse_gitlab("Tag Push Hook", fixture("gitlab/tag-push.payload.json"))
    assert isinstance(event, PushEvent)
    assert event.branch is None
    assert event.repo_urls == frozenset({"example.com/jsmith/example"})
    assert not matches(event, repo_url="git@example.com:jsmith/example.git", branch="master")


def test_a_gitlab_branch_deletion_is_marked_deleted() -> None:
    """GitLab marks a deleted branch by an all-zero `after`; it nudges no app."""
    payload = json.loads(fixture("gitlab/push.payload.json"))
    payload["after"] = "0" * 40
    event = parse_gitlab("Push Hook", json.dumps(payload).encode())
    assert isinstance(event, PushEvent)
    assert event.deleted
    assert not matches(event, repo_url="http://example.com/mike/diaspora.git", branch="master")


@pytest.mark.parametrize("event", ["Merge Request Hook", "Pipeline Hook", "System Hook", "push"])
def test_other_gitlab_events_are_ignored(event: str) -> None:
    """Other events give None (answered 200, so GitLab keeps the hook enabled), body unread."""
    assert parse_gitlab(event, fixture("gitlab/push.payload.json")) is None
    assert parse_gitlab(event, b"\xff not json") is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"ref": "refs/heads/main"}',
        b'{"ref": "refs/heads/main", "project": {"web_url": ""}, "repository": null}',
        b'{"project": {"git_http_url": "https://gitlab.com/acme/web.git"}}',
    ],
)
def test_a_malformed_gitlab_push_gets_400(body: bytes) -> None:
    """Bad JSON, or a push without a ref or a usable project URL: 400 malformed."""
    with rejected(400, "malformed"):
        parse_gitlab("Push Hook", body)


def test_a_gitlab_delivery_without_an_event_header_gets_400() -> None:
    """Without X-Gitlab-Event there is no telling what the body is: 400 malformed."""
    with rejected(400, "malformed"):
        parse_gitlab(None, fixture("gitlab/push.payload.json"))


# --- matching deliveries to apps ---------------------------------------------------------------

GITHUB_PUSH = "github/push-with-new-branch.payload.json"
GITLAB_PUSH = "gitlab/push.payload.json"


def parse(name: str) -> PushEvent:
    event = (
        parse_github("push", fixture(name))
        if name.startswith("github/")
        else parse_gitlab("Push Hook", fixture(name))
    )
    assert isinstance(event, PushEvent)
    return event


@pytest.mark.parametrize(
    ("payload", "app_repo"),
    [
        (GITHUB_PUSH, "https://github.com/Codertocat/Hello-World.git"),  # clone_url
        (GITHUB_PUSH, "git@github.com:Codertocat/Hello-World.git"),  # ssh_url
        (GITHUB_PUSH, "https://github.com/Codertocat/Hello-World"),  # html_url
        (GITHUB_PUSH, "git://github.com/Codertocat/Hello-World.git"),  # git_url
        (GITHUB_PUSH, "ssh://git@github.com/Codertocat/Hello-World.git"),
        (GITHUB_PUSH, "https://github.com/codertocat/hello-world.git"),
        (GITHUB_PUSH, "ssh://git@github.com:22/codertocat/hello-world"),
        (GITLAB_PUSH, "http://example.com/mike/diaspora.git"),  # git_http_url
        (GITLAB_PUSH, "git@example.com:mike/diaspora.git"),  # git_ssh_url
        (GITLAB_PUSH, "http://example.com/mike/diaspora"),  # web_url, homepage
        (GITLAB_PUSH, "https://example.com/mike/diaspora.git"),
        (GITLAB_PUSH, "ssh://git@example.com/mike/diaspora.git"),
    ],
)
def test_an_app_matches_however_its_repo_is_spelt(payload: str, app_repo: str) -> None:
    """An app's repo in any form the payload uses (or another spelling) matches the push."""
    assert matches(parse(payload), repo_url=app_repo, branch="master")


FIXTURE_URLS = [
    # (payload, section, field): every repository URL the real deliveries carry
    *[
        (name, "repository", field)
        for name in (GITHUB_PUSH, "github/push-tag-deleted.payload.json")
        for field in ("clone_url", "ssh_url", "html_url", "git_url", "svn_url", "url")
    ],
    *[
        (GITLAB_PUSH, "project", field)
        for field in (
            "git_http_url",
            "git_ssh_url",
            "web_url",
            "http_url",
            "ssh_url",
            "url",
            "homepage",
        )
    ],
    *[
        (GITLAB_PUSH, "repository", field)
        for field in ("git_http_url", "git_ssh_url", "url", "homepage")
    ],
    *[
        ("gitlab/tag-push.payload.json", "project", field)
        for field in ("git_http_url", "git_ssh_url", "web_url")
    ],
    *[
        ("gitlab/tag-push.payload.json", "repository", field)
        for field in ("git_http_url", "git_ssh_url", "url")
    ],
]


@pytest.mark.parametrize(("payload", "section", "field"), FIXTURE_URLS)
def test_every_url_form_in_the_fixtures_names_the_pushed_repository(
    payload: str, section: str, field: str
) -> None:
    """https .git, git@host:path, ssh://, git:// and web URLs of a delivery are one repository.

    Used as an app's `repo`, each of them matches the delivery it came from.
    """
    url = json.loads(fixture(payload))[section][field]
    event = (
        parse_github("push", fixture(payload))
        if payload.startswith("github/")
        else parse_gitlab("Push Hook", fixture(payload))
    )
    assert isinstance(event, PushEvent)
    assert len(event.repo_urls) == 1
    assert normalise_repo_url(url) in event.repo_urls
    assert matches(event, repo_url=url, branch="master") is (payload in (GITHUB_PUSH, GITLAB_PUSH))


@pytest.mark.parametrize(
    ("app_repo", "branch"),
    [
        ("https://github.com/Codertocat/Hello-World.git", "main"),
        ("https://github.com/Codertocat/Hello-World.git", "Master"),
        ("https://github.com/Codertocat/Hello-World-2.git", "master"),
        ("https://github.com/Octocoders/Hello-World.git", "master"),
        ("https://gitlab.com/Codertocat/Hello-World.git", "master"),
        ("ssh://git@github.com:2222/Codertocat/Hello-World.git", "master"),
        ("file:///Codertocat/Hello-World", "master"),
        ("not a url", "master"),
    ],
)
def test_another_repository_or_branch_is_not_nudged(app_repo: str, branch: str) -> None:
    """Another repo, host, port or branch (branch names are case-sensitive) does not match."""
    assert not matches(parse(GITHUB_PUSH), repo_url=app_repo, branch=branch)


# --- any input: a result or WebhookRejected, nothing else ---------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
url_texts = st.sampled_from(
    [
        "https://github.com/acme/web.git",
        "git@github.com:acme/web.git",
        "ssh://git@[::1]:99999/x",
        "file:///srv/x",
        "https://u:p@h/x?y",
        "",
    ]
) | st.text(max_size=30)
url_objects = st.dictionaries(
    st.sampled_from(
        [
            "clone_url",
            "ssh_url",
            "html_url",
            "git_url",
            "url",
            "homepage",
            "git_http_url",
            "git_ssh_url",
            "web_url",
        ]
    ),
    url_texts | json_values,
    max_size=5,
)
refs = st.sampled_from(["refs/heads/main", "refs/tags/v1", "refs/heads/", "main"])
push_fields = {
    "ref": refs | json_values,
    "after": st.just("0" * 40) | st.text(max_size=40) | json_values,
    "deleted": st.booleans() | json_values,
    "repository": url_objects | json_values,
    "project": url_objects | json_values,
}
# Near misses of a real push (the right keys, some values wrong) and arbitrary objects.
push_like = st.fixed_dictionaries(
    {"ref": refs, "repository": url_objects, "project": url_objects},
    optional={"after": push_fields["after"], "deleted": push_fields["deleted"]},
)
json_objects = st.fixed_dictionaries({}, optional=push_fields)
bodies = (
    st.binary(max_size=200)
    | push_like.map(lambda p: json.dumps(p).encode())
    | json_objects.map(lambda p: json.dumps(p).encode())
)
any_events = st.none() | st.text(max_size=16)


def assert_valid(result: object) -> None:
    if isinstance(result, PushEvent):
        assert result.repo_urls
        assert all(isinstance(url, str) and url for url in result.repo_urls)
        assert result.branch is None or (isinstance(result.branch, str) and result.branch)
        assert isinstance(result.after, str)
        assert isinstance(result.deleted, bool)
        assert isinstance(
            matches(result, repo_url="https://github.com/acme/web", branch="main"), bool
        )
    else:
        assert result in (None, "ping")


def assert_parses_or_gets_400(
    parser: Callable[[str | None, bytes], object], event: str | None, body: bytes
) -> None:
    try:
        result = parser(event, body)
    except WebhookRejected as exc:
        assert (exc.status, exc.reason) == (400, "malformed")
        assert "\n" not in str(exc)
    else:
        assert_valid(result)


@FUZZ
@given(body=bodies)
def test_any_github_push_body_parses_or_gets_400(body: bytes) -> None:
    """For any bytes as a push, parse_github returns a PushEvent or raises WebhookRejected 400."""
    assert_parses_or_gets_400(parse_github, "push", body)


@FUZZ
@given(event=st.sampled_from(["Push Hook", "Tag Push Hook"]), body=bodies)
def test_any_gitlab_push_body_parses_or_gets_400(event: str, body: bytes) -> None:
    """For any bytes as a (tag) push, parse_gitlab returns a PushEvent or raises 400."""
    assert_parses_or_gets_400(parse_gitlab, event, body)


@FUZZ
@given(event=any_events, body=bodies)
def test_any_event_header_parses_or_gets_400(event: str | None, body: bytes) -> None:
    """Whatever the event header says, both parsers answer with a result or a 400."""
    assert_parses_or_gets_400(parse_github, event, body)
    assert_parses_or_gets_400(parse_gitlab, event, body)


@FUZZ
@given(
    secret=st.none() | st.binary(max_size=40),
    body=st.binary(max_size=200),
    header=st.none()
    | st.text(max_size=80)
    | st.from_regex(r"sha256=[0-9a-fA-F]{64}", fullmatch=True),
)
def test_any_github_signature_header_verifies_only_if_it_is_right(
    secret: bytes | None, body: bytes, header: str | None
) -> None:
    """Arbitrary headers are refused with 401; none passes unless it is the true HMAC."""
    try:
        verify_github_signature(secret=secret, body=body, header=header)
    except WebhookRejected as exc:
        assert exc.status == 401
        assert exc.reason == ("no_secret" if not secret else "bad_signature")
    else:
        assert secret
        assert header is not None
        assert header.strip().lower() == signature(body, secret)


@FUZZ
@given(token=st.none() | st.binary(max_size=40), header=st.none() | st.text(max_size=40))
def test_any_gitlab_token_header_passes_only_if_it_is_the_token(
    token: bytes | None, header: str | None
) -> None:
    """Arbitrary X-Gitlab-Token values are refused with 401 unless equal to the token."""
    try:
        verify_gitlab_token(token=token, header=header)
    except WebhookRejected as exc:
        assert exc.status == 401
        assert exc.reason == ("no_secret" if not token else "bad_signature")
        if token and header is not None:
            assert header.encode() != token
    else:
        assert token
        assert header is not None
        assert header.encode() == token


@FUZZ
@given(secret=st.binary(min_size=1, max_size=40), body=st.binary(max_size=200))
def test_the_true_signature_of_any_body_verifies(secret: bytes, body: bytes) -> None:
    """Any body signed with the configured secret is accepted."""
    verify_github_signature(secret=secret, body=body, header=signature(body, secret))
