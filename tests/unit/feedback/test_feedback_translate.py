"""Events -> feedback intents, and the record that folds them: pure functions, in the order
the reporter publishes (a failure's outcome comes before its Failed phase)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.app.events import Event, Finished, PhaseChanged
from reconciler.config import parse_config
from reconciler.decisions.model import Phase, Result
from reconciler.decisions.repourl import api_host
from reconciler.feedback.record import COMMITS_KEPT, AppRecord, apply, first_notice
from reconciler.feedback.routing import dashboard_url, project_path, route
from reconciler.feedback.translate import (
    DeployStarted,
    Ended,
    Intent,
    Notice,
    Started,
    Translator,
    clip,
    failure_description,
)
from tests.support.config import app_table, config_text, toml_lines

R1 = "1" * 40
R2 = "2" * 40
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOTIFY = ("deployed", "failed", "rolled_back", "rollback_failed", "test_failed")


def phases(revision: str, *names: Phase, start: Phase = Phase.IN_SYNC) -> list[Event]:
    out: list[Event] = []
    previous = start
    for phase in names:
        out.append(PhaseChanged(app="web", phase=phase, previous=previous, revision=revision))
        previous = phase
    return out


def finished(revision: str, result: Result, error: str | None = None) -> Finished:
    return Finished(
        app="web",
        revision=revision,
        result=result,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=125),
        error=error,
    )


def translate(events: list[Event], notify: tuple[str, ...] = NOTIFY) -> list[Intent]:
    translator = Translator()
    out: list[Intent] = []
    for event in events:
        out += translator.feed(event, environment="production", notify=notify)
    return out


def shape(intents: list[Intent]) -> list[str]:
    names = []
    for intent in intents:
        if isinstance(intent, Ended):
            names.append(f"ended:{intent.state}:{intent.revision[:1]}")
        elif isinstance(intent, Notice):
            names.append(f"notice:{intent.outcome}")
        else:
            names.append(f"{type(intent).__name__.lower()}:{intent.revision[:1]}")
    return names


B, T, P, M, D = Phase.BUILDING, Phase.TESTING, Phase.PUSHING, Phase.MIGRATING, Phase.DEPLOYING


def test_a_deploy_is_pending_then_a_deployment_then_success() -> None:
    events = [*phases(R1, B, T, P, D), finished(R1, Result.DEPLOYED)]
    events += phases(R1, Phase.IN_SYNC, start=D)
    intents = translate(events)
    assert shape(intents) == ["started:1", "deploystarted:1", "ended:success:1", "notice:deployed"]
    started, deploying, ended = intents[0], intents[1], intents[2]
    assert isinstance(started, Started) and started.description == "Deploying to production"
    assert isinstance(deploying, DeployStarted)
    assert isinstance(ended, Ended) and ended.deployed and ended.description == "Live in production"


def test_a_deploy_without_a_build_starts_at_deploying() -> None:
    events = [*phases(R1, D), finished(R1, Result.DEPLOYED)]
    assert shape(translate(events, notify=())) == [
        "started:1",
        "deploystarted:1",
        "ended:success:1",
    ]


def test_a_failed_test_is_a_failure_once_the_app_is_failed_and_no_deployment() -> None:
    error = "test failed: /bin/false exited 1\nline one\nline two"
    events = [*phases(R1, B, T), finished(R1, Result.TEST_FAILED, error)]
    # The outcome alone is not yet a failure: the Failed phase follows it.
    assert shape(translate(events)) == ["started:1", "notice:test_failed"]
    events += phases(R1, Phase.FAILED, start=T)
    intents = translate(events)
    assert shape(intents) == ["started:1", "notice:test_failed", "ended:failure:1"]
    ended = intents[-1]
    assert isinstance(ended, Ended)
    assert ended.description == "Test failed: /bin/false exited 1"
    assert not ended.deployed


def test_a_failed_rollout_and_a_rollback_end_the_deployment_too() -> None:
    for result, label in ((Result.FAILED, "Rollout failed"), (Result.ROLLED_BACK, "Rolled back")):
        events = [*phases(R1, B, P, D), finished(R1, result, "tasks failed to start\ndetail")]
        events += phases(R1, Phase.FAILED, start=D)
        intents = translate(events)
        assert shape(intents)[:3] == ["started:1", "deploystarted:1", f"notice:{result.value}"]
        ended = intents[3]
        assert isinstance(ended, Ended) and ended.state == "failure" and ended.deployed
        assert ended.description == f"{label}: tasks failed to start"


def test_a_pre_deploy_failure_happens_after_the_deployment_began() -> None:
    events = [*phases(R1, B, P, D, M), finished(R1, Result.PRE_DEPLOY_FAILED, "exit 3")]
    events += phases(R1, Phase.FAILED, start=M)
    intents = translate(events, notify=())
    assert shape(intents) == ["started:1", "deploystarted:1", "ended:failure:1"]
    assert isinstance(intents[-1], Ended) and intents[-1].deployed


def test_a_build_failure_that_is_retried_stays_pending() -> None:
    events: list[Event] = []
    for attempt in range(2):
        start = Phase.IN_SYNC if attempt == 0 else Phase.PENDING
        events += [*phases(R1, B, start=start), finished(R1, Result.BUILD_FAILED, "bad")]
        events += phases(R1, Phase.PENDING, start=B)
    assert shape(translate(events, notify=())) == ["started:1", "started:1"]
    # The third failed build holds the revision: now it is a failure.
    events += [*phases(R1, B, start=Phase.PENDING), finished(R1, Result.BUILD_FAILED, "bad")]
    events += phases(R1, Phase.FAILED, start=B)
    assert shape(translate(events, notify=()))[-1] == "ended:failure:1"


def test_superseded_is_neither_pending_nor_failed() -> None:
    events = [*phases(R1, B, P), finished(R1, Result.SUPERSEDED, f"superseded by {R2}")]
    events += phases(R2, B, start=P)
    intents = translate(events)
    assert shape(intents) == ["started:1", "ended:error:1", "started:2"]
    ended = intents[1]
    assert (
        isinstance(ended, Ended) and ended.description == f"Not deployed: superseded by {R2[:12]}"
    )


def test_a_failure_while_already_failed_is_reported_at_once() -> None:
    translator = Translator()
    for event in phases(R1, Phase.FAILED):
        translator.feed(event, environment="prod")
    out = translator.feed(
        finished(R2, Result.FAILED, "rolled back while not watched"), environment="prod"
    )
    assert shape(out) == ["ended:failure:2"]


def test_notices_only_for_the_configured_events() -> None:
    events = [*phases(R1, D), finished(R1, Result.DEPLOYED)]
    assert "notice:deployed" not in shape(translate(events, notify=("failed",)))


def test_descriptions_are_one_clipped_line() -> None:
    assert clip("a\nb\tc") == "a b c"
    long = clip("x" * 500)
    assert len(long) == 140 and long.endswith("\u2026")
    assert failure_description("rolled_back", None) == "Rolled back"
    assert failure_description("test_failed", "\n\nTest failed: exit 2") == "Test failed: exit 2"
    assert clip("\x1b[31mred\x1b[0m") == "[31mred [0m"


# The record -----------------------------------------------------------------------------


def started(revision: str = R1) -> Started:
    return Started(app="web", revision=revision, description="Deploying")


def ended(state: str = "success", *, deployed: bool = True, revision: str = R1) -> Ended:
    return Ended(
        app="web",
        revision=revision,
        result=Result.DEPLOYED,
        state=state,  # type: ignore[arg-type]
        description=state,
        deployed=deployed,
    )


def test_the_record_coalesces_to_the_newest_state() -> None:
    record = AppRecord()
    assert apply(record, started())
    assert not apply(record, started())  # the same pass, another phase
    assert apply(record, DeployStarted(app="web", revision=R1, description="Rolling out"))
    assert apply(record, ended("success"))
    entry = record.commits[R1]
    assert entry.want is not None
    assert (entry.want.status, entry.want.deployment) == ("success", "success")
    assert not apply(record, ended("success"))  # seen again: nothing new


def test_a_new_pass_after_the_end_is_a_new_attempt() -> None:
    record = AppRecord()
    apply(record, started())
    apply(record, ended("failure", deployed=False))
    notice = Notice("web", R1, "test_failed", T0, T0, "x")
    assert first_notice(record, notice)
    assert not first_notice(record, notice)
    apply(record, started())
    entry = record.commits[R1]
    assert entry.attempt == 2 and not entry.ended and entry.notified == []
    assert first_notice(record, notice)


def test_a_superseded_deployment_becomes_inactive() -> None:
    record = AppRecord()
    apply(record, DeployStarted(app="web", revision=R1, description="Rolling out"))
    apply(record, ended("error", deployed=False))
    want = record.commits[R1].want
    assert want is not None and (want.status, want.deployment) == ("error", "inactive")


def test_the_record_keeps_the_newest_commits_only() -> None:
    record = AppRecord()
    for n in range(COMMITS_KEPT + 5):
        apply(record, started(f"{n:040x}"))
    gone = record.prune()
    assert len(gone) == 5 and len(record.commits) == COMMITS_KEPT
    assert gone[0].sha == f"{0:040x}"


# Routing -------------------------------------------------------------------------------


def config_for(repo: str, **sections: dict[str, str]) -> str:
    text = config_text(apps=[app_table("web", repo)])
    for name, table in sections.items():
        text += "\n".join(toml_lines(f"[{name}]", table)) + "\n"
    return text


@pytest.mark.parametrize(
    ("repo", "kind", "project"),
    [
        ("https://github.com/Acme/Web.git", "github", "Acme/Web"),
        ("git@github.com:acme/web.git", "github", "acme/web"),
        ("ssh://git@github.com/acme/web", "github", "acme/web"),
        ("https://ghe.example.com/acme/web", "github", "acme/web"),
        ("https://gitlab.com/group/sub/web.git", "gitlab", "group/sub/web"),
        ("git@gitlab.example.com:group/web.git", "gitlab", "group/web"),
        ("https://bitbucket.org/acme/web.git", None, None),
        ("file:///srv/git/web.git", None, None),
    ],
)
def test_the_repository_url_picks_the_forge(
    repo: str, kind: str | None, project: str | None
) -> None:
    config = parse_config(
        config_for(
            repo,
            github={"token_file": "/run/gh", "api_url": "https://ghe.example.com/api/v3"},
            gitlab={"token_file": "/run/gl", "api_url": "https://gitlab.example.com/api/v4"},
        )
    )
    forge = route(config.apps[0], config)
    assert (forge.kind if forge else None) == kind
    assert (forge.project if forge else None) == project


def test_no_token_file_means_no_statuses() -> None:
    config = parse_config(config_for("https://github.com/acme/web"))
    assert route(config.apps[0], config) is None


def test_hosts_paths_and_links() -> None:
    assert api_host("https://GHE.example.com:443/api/v3") == "ghe.example.com"
    assert api_host("http://127.0.0.1:8080/api/v3") == "127.0.0.1:8080"
    assert project_path("git@host:/a/b.git/") == "a/b"
    config = parse_config(config_for("https://github.com/acme/web"))
    assert dashboard_url(config, "web") == "http://127.0.0.1:8088/apps/web"
    text = config_text(
        daemon={"public_url": "https://cd.example.com/"},
        apps=[app_table("web", "https://github.com/acme/web")],
    )
    assert dashboard_url(parse_config(text), "web") == "https://cd.example.com/apps/web"
