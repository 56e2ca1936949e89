"""Who may do what: every role against every action, inside and outside its app globs."""

from __future__ import annotations

import pytest

from reconciler.decisions.access import (
    Action,
    Identity,
    Role,
    Verdict,
    decide,
    matches_hash,
    sees,
    token_sha256,
    visible,
)

VIEWER = Identity("vera", Role.VIEWER, ("web-*",))
OPERATOR = Identity("otto", Role.OPERATOR, ("web-*", "api"))
ADMIN = Identity("ada", Role.ADMIN, ("web-*",))  # an admin's globs do not narrow it

ALLOWED, FORBIDDEN, HIDDEN = Verdict.ALLOWED, Verdict.FORBIDDEN, Verdict.HIDDEN

# action: (viewer, operator, admin) on an app all three see
TABLE = {
    Action.READ: (ALLOWED, ALLOWED, ALLOWED),
    Action.SYNC: (FORBIDDEN, ALLOWED, ALLOWED),
    Action.ROLLBACK: (FORBIDDEN, ALLOWED, ALLOWED),
    Action.UNPIN: (FORBIDDEN, ALLOWED, ALLOWED),
    Action.APPROVE: (FORBIDDEN, ALLOWED, ALLOWED),
    Action.REJECT: (FORBIDDEN, ALLOWED, ALLOWED),
    Action.CLEANUP: (FORBIDDEN, FORBIDDEN, ALLOWED),
    Action.OVERRIDE_FREEZE: (FORBIDDEN, FORBIDDEN, ALLOWED),
}


def test_the_table_names_every_action() -> None:
    assert set(TABLE) == set(Action)


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.label)
@pytest.mark.parametrize("who", [0, 1, 2], ids=["viewer", "operator", "admin"])
def test_each_role_against_each_action_on_its_own_app(action: Action, who: int) -> None:
    identity = (VIEWER, OPERATOR, ADMIN)[who]
    assert decide(identity, action, "web-shop") is TABLE[action][who]


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.label)
def test_an_app_outside_the_globs_does_not_exist_for_it(action: Action) -> None:
    """404, never 403: a viewer of web-* cannot even learn that `billing` exists."""
    assert decide(VIEWER, action, "billing") is HIDDEN
    assert decide(OPERATOR, action, "billing") is HIDDEN
    assert decide(ADMIN, action, "billing") is TABLE[action][2]


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.label)
def test_no_identity_may_do_nothing(action: Action) -> None:
    assert decide(None, action, "web-shop") is Verdict.NO_IDENTITY
    assert decide(None, action) is Verdict.NO_IDENTITY


def test_globs_are_case_sensitive_and_whole_name() -> None:
    assert sees(OPERATOR, "api")
    assert not sees(OPERATOR, "api-internal")
    assert not sees(OPERATOR, "WEB-shop")
    assert visible(VIEWER, ["api", "web-a", "billing", "web-b"]) == ["web-a", "web-b"]


def test_only_reads_leave_state_alone() -> None:
    assert [a for a in Action if not a.changes_state] == [Action.READ]


@pytest.mark.parametrize("name", ["viewer", "Operator", "ADMIN"])
def test_roles_are_named_in_any_case(name: str) -> None:
    assert str(Role.named(name)) == name.lower()


def test_an_unknown_role_is_one_line_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown role 'root' \(one of viewer, operator, admin\)"):
        Role.named("root")


def test_a_token_is_found_by_its_hash_only() -> None:
    hashes = [token_sha256("first"), token_sha256("second").upper()]
    assert matches_hash("second", hashes) == 1
    assert matches_hash("first", hashes) == 0
    assert matches_hash("third", hashes) is None
    assert matches_hash("", hashes) is None
