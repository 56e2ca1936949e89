"""One app's schedule: when the next pass runs (poll, nudge, backoff).

What a pass does is in stages/; this module only decides when. A pass starts from scratch
every time (git, the registry, ECS), so whatever happened before, a crash, a restart or a
change in the console, the next pass converges from what is true now. Errors are sorted by
what to do next (errors.py): transient ones are retried with jittered backoff and never mark
a revision as failed; those that need a human are retried with the same backoff so the fix
is noticed without a nudge.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import structlog

from reconciler.adapters.ports import Adapters
from reconciler.aio import backoff
from reconciler.app.reporter import Reporter
from reconciler.app.stages.context import AppSession, PromotionSource
from reconciler.app.stages.pipeline import Next, run_pass
from reconciler.app.state import StateStore
from reconciler.config import AppConfig
from reconciler.decisions.freeze import FreezeWindow
from reconciler.decisions.model import utcnow
from reconciler.errors import (
    BranchEmpty,
    BuildFailed,
    ReconcilerError,
    StalledError,
    TransientError,
)

log = structlog.get_logger("reconciler.loop")
WAKE_MARGIN = 0.05  # seconds


class AppLoop:
    def __init__(
        self,
        *,
        app: AppConfig,
        poll_interval: float,
        adapters: Adapters,
        build_slots: asyncio.Semaphore,
        store: StateStore,
        reporter: Reporter,
        timings: backoff.Timings,
        promotion: PromotionSource | None = None,
        freezes: Callable[[], Sequence[FreezeWindow]] = tuple,
    ) -> None:
        self.app = app
        self.status = reporter.status
        self._session = AppSession(
            app=app,
            io=adapters,
            store=store,
            report=reporter,
            timings=timings,
            build_slots=build_slots,
            poll_interval=poll_interval,
            promotion=promotion,
            freezes=freezes,
        )
        self._wakeup = asyncio.Event()
        self._clear_hold_requested = False
        self._asked_by: str | None = None
        self._attempt = 0
        self._woken = True  # the first pass, like a nudged one, reads everything afresh

    # Steering --------------------------------------------------------------------------

    def nudge(self) -> None:
        """Start a pass now; a burst of nudges collapses into one pass (plus one if mid-pass)."""
        # A nudge means "the remote may have moved": do not answer from cached remote heads.
        self._session.io.git.forget_heads(self.app.repo)
        self._session.nudges.bump()
        self._wakeup.set()

    def sync(self, *, by: str | None = None, override_freeze: str | None = None) -> None:
        """Operator's `reconciler sync`: clear a Failed hold and start a pass now; with
        `override_freeze` (an admin's reason), one release goes through a freeze."""
        self._clear_hold_requested = True
        if override_freeze is not None:
            self._session.override_freeze = override_freeze
        self.asked(by=by)

    def asked(self, *, by: str | None) -> None:
        """Start a pass now for `by` (an operator's sync, rollback or unpin): its outcome in
        the history names them."""
        if by is not None:
            self._asked_by = by
        self.nudge()

    async def quiesce(self, grace: float) -> None:
        """Wait (bounded) for a registration and service update under way, then bar new ones."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._session.critical.acquire(), grace)

    # The loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            # Cleared before the pass, so a nudge that arrives during it starts one more.
            self._wakeup.clear()
            outcome = await self._pass()
            if outcome is Next.WAIT:
                # An override lets through the release its sync asked for (kept over a retry,
                # or a newer revision turning up mid-pass), never a later one.
                self._session.override_freeze = None
            if outcome is Next.AGAIN:
                continue
            if outcome is Next.RETRY:
                # Never later than a normal poll: a retry costs no more than polling does.
                timings = self._session.timings
                delay = min(
                    self._session.poll_interval,
                    backoff.backoff_delay(
                        self._attempt, base=timings.retry_base, cap=timings.retry_cap
                    ),
                )
                self._attempt += 1
            else:
                # To the next point of a grid shared by every app (never later than one
                # interval): all apps pass together, so their DescribeServices share calls and
                # the apps of a repository share one ls-remote.
                delay = backoff.aligned(self._session.poll_interval)
                self._attempt = 0
            delay = self._until_wake(delay)
            self._woken = await backoff.sleep(delay, wakeup=self._wakeup)

    def _until_wake(self, delay: float) -> float:
        """`delay`, or less when the pass asked to look again sooner (a freeze ends): a
        release waiting for the end of a window starts then, never a poll later."""
        wake_at, self._session.wake_at = self._session.wake_at, None
        if wake_at is None:
            return delay
        # A little past it: a wake a hair early would find the window still closing.
        return max(0.0, min(delay, (wake_at - utcnow()).total_seconds() + WAKE_MARGIN))

    async def _pass(self) -> Next:
        report = self._session.report
        clear, self._clear_hold_requested = self._clear_hold_requested, False
        pin = self._session.memory.pin
        report.asked_by = self._asked_by or (pin.asked_by if pin is not None else None)
        self._asked_by = None
        with structlog.contextvars.bound_contextvars(app=self.app.name):
            try:
                return await run_pass(self._session, woken=self._woken, clear_hold=clear)
            except BranchEmpty as exc:
                # Nothing to deploy and nothing wrong: a push (its webhook, or the next poll)
                # brings the first commit.
                report.branch_empty(str(exc))
                return Next.WAIT
            except TransientError as exc:
                report.pass_failed(exc, result="retry", level="warning")
            except StalledError as exc:
                # Fixed outside the daemon (a branch pushed again, a permission granted), so
                # it is retried too, with backoff: the fix is noticed without a nudge.
                report.pass_failed(exc, result="stalled", level="error")
            except BuildFailed as exc:
                report.pass_failed(exc, result="build_failed", level="error", detail=exc.log_tail)
            except ReconcilerError as exc:
                report.pass_failed(exc, result="error", level="error")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A bug must not kill the app's loop or the daemon; it is logged in full and the
                # pass retried with backoff, like any transient failure.
                log.exception("pass_crashed")
                report.pass_failed(exc, result="error", level="error")
            return Next.RETRY
