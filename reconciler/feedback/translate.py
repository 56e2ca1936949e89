"""From events to feedback: what people should be told about an app and a revision.

A pure state machine, no I/O: `Translator.feed(event)` answers with the intents the event
implies, and the dispatcher turns those into requests. The rules:

- A phase entering Building, Testing, Pushing, Migrating or Deploying: a pass works on the
  revision (`Started`, a pending status). Deploying also means a deployment began
  (`DeployStarted`).
- Finished deployed: the revision is live (`Ended` success).
- Finished failed, rolled_back, rollback_failed, test_failed, pre_deploy_failed or build_failed:
  a failure,
  but only once the app's phase is Failed (the outcome and the phase may come in either
  order), and a failed build is retried (the phase goes back to Pending) until the
  revision is held; a failure the loop retries is not one to report.
- Finished superseded: a newer revision replaced this one before it went live (`Ended`
  with state error: not a failure of the commit, and no longer pending either).
- Every Finished whose result is one of the notify events: a chat message (`Notice`).
- A phase entering AwaitingApproval: with `approval_requested` among the notify events, a
  chat message asking for the approval, with the link to the app's page (`Notice`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from reconciler.app.events import Event, Finished, PhaseChanged, StagesChanged
from reconciler.decisions.model import Phase, Result

BUSY = frozenset({Phase.BUILDING, Phase.TESTING, Phase.PUSHING, Phase.MIGRATING, Phase.DEPLOYING})
# Results that report a failure of the revision once the app is Failed.
FAILURES = frozenset(
    {
        Result.FAILED,
        Result.ROLLED_BACK,
        Result.ROLLBACK_FAILED,
        Result.TEST_FAILED,
        Result.PRE_DEPLOY_FAILED,
        Result.BUILD_FAILED,
        Result.REJECTED,
        Result.APPROVAL_EXPIRED,
    }
)
APPROVAL_REQUESTED = "approval_requested"
# Results reached only after the service update began, so a deployment exists for them.
AFTER_DEPLOY = frozenset(
    {
        Result.DEPLOYED,
        Result.FAILED,
        Result.ROLLED_BACK,
        Result.ROLLBACK_FAILED,
        Result.PRE_DEPLOY_FAILED,
    }
)
DESCRIPTION_LIMIT = 140  # GitHub refuses longer commit status and deployment descriptions

LABELS: dict[str, str] = {
    Result.DEPLOYED.value: "Deployed",
    Result.FAILED.value: "Rollout failed",
    Result.ROLLED_BACK.value: "Rolled back",
    Result.ROLLBACK_FAILED.value: "Rollback failed",
    Result.TEST_FAILED.value: "Test failed",
    Result.PRE_DEPLOY_FAILED.value: "Pre-deploy task failed",
    Result.BUILD_FAILED.value: "Build failed",
    Result.SUPERSEDED.value: "Superseded",
    Result.REJECTED.value: "Rejected",
    Result.APPROVAL_EXPIRED.value: "Approval expired",
    APPROVAL_REQUESTED: "Approval requested",
}

State = Literal["pending", "success", "failure", "error"]


@dataclass(frozen=True)
class Started:
    """A pass works on `revision`: its status is pending."""

    app: str
    revision: str
    description: str


@dataclass(frozen=True)
class DeployStarted:
    """The service update for `revision` began: a deployment, in progress."""

    app: str
    revision: str
    description: str


@dataclass(frozen=True)
class Ended:
    """The attempt at `revision` ended: live (success), failed or held (failure), or
    replaced by a newer revision before it went live (error)."""

    app: str
    revision: str
    result: Result
    state: State
    description: str
    deployed: bool  # the service update had begun, so a deployment ends with it


@dataclass(frozen=True)
class Notice:
    """One chat message about an outcome."""

    app: str
    revision: str
    outcome: str  # a Result value, as the notify events name them
    started_at: datetime
    finished_at: datetime
    error: str | None


Intent = Started | DeployStarted | Ended | Notice


class Translator:
    """Remembers each app's phase and a failure waiting for the Failed phase; nothing else."""

    def __init__(self) -> None:
        self._phase: dict[str, Phase] = {}
        self._working: dict[str, str] = {}  # the revision a busy app works on
        self._failing: dict[str, Finished] = {}

    def feed(self, event: Event, *, environment: str, notify: Collection[str] = ()) -> list[Intent]:
        if isinstance(event, PhaseChanged):
            return self._phase_changed(event, environment, notify)
        if isinstance(event, StagesChanged):
            return []  # the timeline is the dashboard's
        return self._finished(event, environment, notify)

    def forget(self, app: str) -> None:
        self._phase.pop(app, None)
        self._working.pop(app, None)
        self._failing.pop(app, None)

    def _phase_changed(
        self, event: PhaseChanged, environment: str, notify: Collection[str]
    ) -> list[Intent]:
        self._phase[event.app] = event.phase
        waiting = self._failing.pop(event.app, None)
        out: list[Intent] = []
        if (
            event.phase is Phase.AWAITING_APPROVAL
            and event.revision is not None
            and APPROVAL_REQUESTED in notify
        ):
            # Asked once per attempt at the revision (the records remember it), with the
            # page where it is approved.
            out.append(
                Notice(
                    app=event.app,
                    revision=event.revision,
                    outcome=APPROVAL_REQUESTED,
                    started_at=event.at,
                    finished_at=event.at,
                    error=None,
                )
            )
        if event.phase is Phase.FAILED:
            self._working.pop(event.app, None)
            if waiting is not None:
                out.append(_failure(waiting))
            return out
        if event.revision is None or event.phase not in BUSY:
            self._working.pop(event.app, None)
            return out
        if self._working.get(event.app) != event.revision:
            self._working[event.app] = event.revision
            out.append(
                Started(
                    app=event.app,
                    revision=event.revision,
                    description=clip(f"Deploying to {environment}"),
                )
            )
        if event.phase is Phase.DEPLOYING:
            out.append(
                DeployStarted(
                    app=event.app,
                    revision=event.revision,
                    description=clip(f"Rolling out to {environment}"),
                )
            )
        return out

    def _finished(self, event: Finished, environment: str, notify: Collection[str]) -> list[Intent]:
        out: list[Intent] = []
        if event.result is Result.DEPLOYED:
            out.append(
                Ended(
                    app=event.app,
                    revision=event.revision,
                    result=event.result,
                    state="success",
                    description=clip(f"Live in {environment}"),
                    deployed=True,
                )
            )
        elif event.result is Result.SUPERSEDED:
            newer = re.search(r"[0-9a-f]{40}", event.error or "")
            by = f" by {newer.group(0)[:12]}" if newer else ""
            out.append(
                Ended(
                    app=event.app,
                    revision=event.revision,
                    result=event.result,
                    state="error",
                    description=clip(f"Not deployed: superseded{by}"),
                    deployed=False,
                )
            )
        elif event.result in FAILURES:
            if self._phase.get(event.app) is Phase.FAILED:
                out.append(_failure(event))
            else:
                self._failing[event.app] = event
        if event.result.value in notify:
            out.append(
                Notice(
                    app=event.app,
                    revision=event.revision,
                    outcome=event.result.value,
                    started_at=event.started_at,
                    finished_at=event.finished_at,
                    error=event.error,
                )
            )
        return out


def _failure(event: Finished) -> Ended:
    return Ended(
        app=event.app,
        revision=event.revision,
        result=event.result,
        state="failure",
        description=failure_description(event.result.value, event.error),
        deployed=event.result in AFTER_DEPLOY,
    )


def failure_description(outcome: str, error: str | None) -> str:
    """`Test failed: <the error's first line>`, without saying "test failed" twice."""
    label = LABELS.get(outcome, outcome.replace("_", " ").capitalize())
    first = first_line(error)
    if not first:
        return clip(label)
    if first.lower().startswith(label.lower()):
        return clip(first[0].upper() + first[1:])
    return clip(f"{label}: {first}")


def first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clip(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """One line of at most `limit` characters, control characters removed."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 1].rstrip() + "\u2026"
