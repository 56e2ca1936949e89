"""PAUSE lifecycle hooks of service deployments, for the sandbox's records (deployments.py).

A service whose `deploymentConfiguration.lifecycleHooks` has a hook of `targetType` PAUSE
stops each of its deployments when it reaches one of the hook's `lifecycleStages`: the
deployment stays IN_PROGRESS, its `lifecycleStage` the hook's stage, and
`lifecycleHookDetails` names the hook (`hookId`, status AWAITING_ACTION, `expiresAt`,
`timeoutAction`) until ContinueServiceDeployment names it, with CONTINUE (the deployment
goes on where it stopped, the time it waited added to every stage after) or ROLLBACK (as a
StopServiceDeployment with ROLLBACK), or until the hook's `timeoutConfiguration` passes and
its action is taken. AWS_LAMBDA hooks are not modelled (there is no Lambda to call).

Where a stage falls in the sandbox's lifecycle (the stages of `strategy_phases`, each
starting at its offset in the schedule):

    PRE_SCALE_UP, SCALE_UP, TEST_TRAFFIC_SHIFT, PRODUCTION_TRAFFIC_SHIFT,
    PRE_PRODUCTION_TRAFFIC_SHIFT, RECONCILE_SERVICE     when that stage (the first
                                                        PRODUCTION_TRAFFIC_SHIFT) starts
    POST_SCALE_UP, POST_TEST_TRAFFIC_SHIFT              when the stage after it starts
    POST_PRODUCTION_TRAFFIC_SHIFT                       when BAKE_TIME starts
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

HookAction = Literal["CONTINUE", "ROLLBACK"]

_AT_START = {
    "PRE_SCALE_UP": "SCALE_UP",
    "SCALE_UP": "SCALE_UP",
    "RECONCILE_SERVICE": "RECONCILE_SERVICE",
    "TEST_TRAFFIC_SHIFT": "TEST_TRAFFIC_SHIFT",
    "PRE_PRODUCTION_TRAFFIC_SHIFT": "PRODUCTION_TRAFFIC_SHIFT",
    "PRODUCTION_TRAFFIC_SHIFT": "PRODUCTION_TRAFFIC_SHIFT",
    "POST_PRODUCTION_TRAFFIC_SHIFT": "BAKE_TIME",
}
_AFTER = {"POST_SCALE_UP": "SCALE_UP", "POST_TEST_TRAFFIC_SHIFT": "TEST_TRAFFIC_SHIFT"}


@dataclass(frozen=True)
class PauseHook:
    id: str
    stages: tuple[str, ...]
    timeout: float | None  # seconds; None: it waits for ever
    timeout_action: HookAction


def pause_hooks(configuration: Mapping[str, Any]) -> tuple[PauseHook, ...]:
    """The PAUSE hooks of a deploymentConfiguration, each with an id of its own."""
    found = []
    for hook in configuration.get("lifecycleHooks") or ():
        if hook.get("targetType") != "PAUSE":
            continue
        timeout = hook.get("timeoutConfiguration") or {}
        minutes = timeout.get("timeoutInMinutes")
        action: HookAction = "CONTINUE" if timeout.get("action") == "CONTINUE" else "ROLLBACK"
        found.append(
            PauseHook(
                id=secrets.token_hex(8),
                stages=tuple(str(s) for s in hook.get("lifecycleStages") or ()),
                timeout=float(minutes) * 60 if minutes is not None else None,
                timeout_action=action,
            )
        )
    return tuple(found)


@dataclass(frozen=True)
class StopPoint:
    """Where a hook stops a deployment: `offset` seconds into its schedule, in `stage`,
    the traffic as the schedule's stage `traffic` (an index) left it."""

    offset: float
    stage: str
    hook: PauseHook
    traffic: int


def stop_points(
    schedule: Sequence[tuple[float, str]], hooks: Sequence[PauseHook]
) -> list[StopPoint]:
    """Every (offset, stage, hook) of `hooks` in a schedule of (start, stage name), in the
    order a deployment reaches them; a stage the schedule lacks stops nothing."""
    points: list[StopPoint] = []
    for hook in hooks:
        for stage in hook.stages:
            found = _where(schedule, stage)
            if found is not None:
                at, traffic = found
                points.append(StopPoint(schedule[at][0], stage, hook, traffic))
    points.sort(key=lambda p: p.offset)
    return points


def _where(schedule: Sequence[tuple[float, str]], stage: str) -> tuple[int, int] | None:
    """(the index of the schedule's stage at whose start `stage` stops it, the index of
    the stage whose traffic it has then); None when the schedule has no such point."""
    names = [name for _, name in schedule]
    if stage in _AT_START and _AT_START[stage] in names:
        at = names.index(_AT_START[stage])
        # A PRE_ stage stops it before that stage's traffic moves; the others once it has.
        return at, max(at - 1, 0) if stage.startswith("PRE_") else at
    before = _AFTER.get(stage)
    if before is not None and before in names:
        at = names.index(before) + 1
        return (at, at - 1) if at < len(schedule) else None
    return None


@dataclass
class Pause:
    """A deployment stopped at a hook: since when (the controller's clock)."""

    point: StopPoint
    since: float

    def expired(self, now: float) -> bool:
        timeout = self.point.hook.timeout
        return timeout is not None and now - self.since >= timeout

    def details(self, started: datetime) -> dict[str, Any]:
        """Its `lifecycleHookDetails` entry; `started` is the wall-clock time it began."""
        hook = self.point.hook
        entry: dict[str, Any] = {
            "hookId": hook.id,
            "targetType": "PAUSE",
            "status": "AWAITING_ACTION",
            "timeoutAction": hook.timeout_action,
        }
        if hook.timeout is not None:
            entry["expiresAt"] = started + timedelta(seconds=hook.timeout)
        return entry
