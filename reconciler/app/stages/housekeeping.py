"""Housekeeping: deregister an app's old task definition revisions and delete its old images.

    what runs and what may run (service, deployments, service deployments in flight, holds)
    ->  the family's ACTIVE revisions  ->  choose and deregister (decisions/housekeeping.py decides)
    ->  the repository's images  ->  choose against what stays, and delete

Runs after a successful rollout, and from `reconciler cleanup`. Nothing here fails a deploy:
every error ends up in the report and the log, and what could not be judged safely is left
for the next run. Images are judged after the deregistrations, against the revisions that
really stay: a revision whose deregistration failed still names its images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import structlog

from reconciler.adapters.ports import HousekeepingPort, SchedulesPort
from reconciler.app.stages.schedules import named_by_schedules
from reconciler.decisions.housekeeping import (
    Deleted,
    Plan,
    StoredImage,
    TaskDefinitionRevision,
    choose_images,
    choose_task_definitions,
    family_of,
    referenced_images,
    revision_key,
)
from reconciler.decisions.model import ServiceState
from reconciler.errors import ReconcilerError, ServiceDeploymentsUnreadable, TransientError

if TYPE_CHECKING:
    from reconciler.app.stages.context import PassContext
    from reconciler.app.state import AppMemory

log = structlog.get_logger("reconciler.pass")

Kind = Literal["task_definition", "image"]
PROTECTED_BY_CALLER = "protected (a hold's rollback target)"


class CleanupSettings(Protocol):
    @property
    def keep_task_definitions(self) -> int: ...

    @property
    def keep_images(self) -> int: ...


class CleanupApp(Protocol):
    """What housekeeping reads of an app's config (an AppConfig fits)."""

    @property
    def name(self) -> str: ...

    @property
    def cluster(self) -> str: ...

    @property
    def service(self) -> str: ...

    @property
    def ecr_repository(self) -> str: ...

    @property
    def cleanup(self) -> CleanupSettings: ...


@dataclass(frozen=True)
class Removal:
    """One revision deregistered or image deleted (or, in a dry run, that would be)."""

    kind: Kind
    name: str  # the task definition ARN, or repository@digest
    detail: str  # the revision number, or the image's tags
    done: bool  # False in a dry run, and when it failed
    error: str | None = None


@dataclass(frozen=True)
class Kept:
    kind: Kind
    name: str
    reason: str


@dataclass(frozen=True)
class CleanupReport:
    app: str
    dry_run: bool
    removed: tuple[Removal, ...] = ()
    kept: tuple[Kept, ...] = ()
    # What went wrong as a whole (a listing that failed, a step skipped as unsafe).
    errors: tuple[str, ...] = ()
    # How what is in use was judged, when not as usual (from the service's deployments
    # list, service deployments being unreadable); not a failure.
    fallbacks: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(r.error for r in self.removed)

    def rows(self) -> list[dict[str, str]]:
        """One printable row per removal, kept item and error: app, action, item, detail."""
        rows = [{"app": self.app, "action": "error", "item": "-", "detail": e} for e in self.errors]
        rows += [
            {"app": self.app, "action": "fallback", "item": "-", "detail": f}
            for f in self.fallbacks
        ]
        for removal in self.removed:
            rows.append(
                {
                    "app": self.app,
                    "action": _action(removal, dry_run=self.dry_run),
                    "item": removal.name,
                    "detail": removal.error or removal.detail,
                }
            )
        for kept in self.kept:
            rows.append(
                {"app": self.app, "action": "keep", "item": kept.name, "detail": kept.reason}
            )
        return rows


def _action(removal: Removal, *, dry_run: bool) -> str:
    verb = "deregister" if removal.kind == "task_definition" else "delete"
    if removal.error:
        return f"{verb} failed"
    if dry_run:
        return f"would {verb}"
    return "deregistered" if removal.kind == "task_definition" else "deleted"


def enabled(app: CleanupApp) -> bool:
    return app.cleanup.keep_task_definitions > 0 or app.cleanup.keep_images > 0


@dataclass
class _Run:
    """What one clean-up has found and done so far."""

    app: CleanupApp
    dry_run: bool
    removed: list[Removal] = dataclasses.field(default_factory=list)
    kept: list[Kept] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    fallbacks: list[str] = dataclasses.field(default_factory=list)

    def report(self) -> CleanupReport:
        return CleanupReport(
            app=self.app.name,
            dry_run=self.dry_run,
            removed=tuple(self.removed),
            kept=tuple(self.kept),
            errors=tuple(self.errors),
            fallbacks=tuple(self.fallbacks),
        )

    def error(self, event: str, message: str) -> None:
        log.warning(event, app=self.app.name, error=message)
        self.errors.append(message)


async def clean_up(
    housekeeping: HousekeepingPort,
    *,
    app: CleanupApp,
    service: ServiceState,
    others: Sequence[ServiceState] = (),
    protected: Mapping[str, str] | Iterable[str] = (),
    referenced: Iterable[str] = (),
    dry_run: bool = False,
) -> CleanupReport:
    """Deregister the app's surplus task definition revisions and delete its surplus images
    (or, with `dry_run`, only say which); never raises the project's errors.

    `service` is the app's (first) service, `others` the further services of its releases:
    each has its own family, and the images are judged once, against what every family
    keeps (the services run the same images). `protected` names task definitions that must
    stay besides those the services run or deploy (a hold's rollback target), as ARNs or as
    a mapping of ARN to why; `referenced` names image references that must stay besides
    those of the task definitions that stay.
    """
    run = _Run(app=app, dry_run=dry_run)
    keep_revisions, keep_images = app.cleanup.keep_task_definitions, app.cleanup.keep_images
    if keep_revisions <= 0 and keep_images <= 0:
        return run.report()
    staying: list[TaskDefinitionRevision] = []
    for each in (service, *others):
        kept = await _clean_family(housekeeping, run, each, protected, keep=keep_revisions)
        if kept is None:
            return run.report()  # what is in use is unknown: no image may go either
        staying += kept
    if keep_images > 0:
        extra = [*referenced_images(staying), *referenced]
        await _delete_images(housekeeping, run, keep=keep_images, referenced=extra)
    return run.report()


async def _clean_family(
    housekeeping: HousekeepingPort,
    run: _Run,
    service: ServiceState,
    protected: Mapping[str, str] | Iterable[str],
    *,
    keep: int,
) -> list[TaskDefinitionRevision] | None:
    """Deregister the surplus revisions of the family `service` runs; the revisions that
    stay (with the protected ones of other families), or None when nothing could be told."""
    shielded = _shielded(service, protected)
    if not await _in_flight(housekeeping, run, service, shielded):
        return None
    family = family_of(service.task_definition)
    try:
        revisions = await housekeeping.task_definitions(family)
    except ReconcilerError as exc:
        # Without the revisions nothing is known about what the images are used by either.
        run.error("cleanup_failed", f"listing task definitions of {family!r}: {exc}")
        return None
    scope = _scope(service.task_definition)
    strangers = [r.arn for r in revisions if scope and _scope(r.arn) != scope]
    if strangers:
        # Clients of another account or region than the service's: its namesakes there are
        # not this app's, whatever their tags say.
        run.error(
            "cleanup_failed",
            f"nothing removed: {strangers[0]} is not in the account and region of "
            f"{service.task_definition}",
        )
        return None
    plan = choose_task_definitions(
        revisions, app=run.app.name, keep=keep, protected=shielded, family=family
    )
    _keep(run, "task_definition", ((r.arn, why) for r, why in plan.keep))
    gone = await _deregister(housekeeping, run, plan)
    staying = [r for r in revisions if r.arn not in gone]
    if run.app.cleanup.keep_images <= 0:
        return staying
    others = await _protected_outside(housekeeping, run, revisions, shielded)
    if others is None:
        return None
    return [*staying, *others]


def _scope(arn: str) -> str:
    """`arn:partition:ecs:region:account` of an ARN; "" for a bare `family:revision`."""
    parts = arn.split(":")
    return ":".join(parts[:5]) if arn.startswith("arn:") and len(parts) > 5 else ""


def _shielded(
    service: ServiceState, protected: Mapping[str, str] | Iterable[str]
) -> dict[str, str]:
    """Every task definition the service runs or deploys, and the caller's, with why."""
    shielded: dict[str, str] = {}
    if service.task_definition:
        shielded[service.task_definition] = "live"
    for deployment in service.deployments:
        if deployment.task_definition:
            shielded.setdefault(
                deployment.task_definition, f"in the service's deployments ({deployment.status})"
            )
    if isinstance(protected, Mapping):
        for arn, why in protected.items():
            shielded.setdefault(arn, why)
    else:
        for arn in protected:
            shielded.setdefault(arn, PROTECTED_BY_CALLER)
    return {arn: why for arn, why in shielded.items() if arn}


async def _in_flight(
    housekeeping: HousekeepingPort, run: _Run, service: ServiceState, shielded: dict[str, str]
) -> bool:
    """Add what service deployments in flight deploy to `shielded`; False (nothing may be
    removed) when that cannot be told and it matters: AWS is busy, or a revision named by a
    service deployment cannot be read while the deployments list says something moves.

    Where service deployments cannot be read at all (access denied, or a region that keeps
    none), what is in use is judged as rollouts judge it then: from the service's
    `deployments` list (PRIMARY and ACTIVE, the one rolled from included), every entry of
    which is in `shielded` already; the report says so."""
    try:
        found = await housekeeping.in_flight_task_definitions(
            cluster=service.cluster, service=service.service
        )
    except ServiceDeploymentsUnreadable as exc:
        listed = ", ".join(
            f"{d.status} {d.task_definition.rsplit('/', 1)[-1]}"
            for d in service.deployments
            if d.task_definition
        )
        message = (
            f"in use judged from the service's deployments ({listed or 'none listed'}): "
            f"service deployments unreadable: {exc}"
        )
        log.warning("cleanup_fallback", app=run.app.name, detail=message)
        run.fallbacks.append(message)
        return True
    except ReconcilerError as exc:
        if isinstance(exc, TransientError) or service.in_flight:
            run.error(
                "cleanup_skipped",
                f"nothing removed: service deployments unreadable: {exc}",
            )
            return False
        # Unreadable while nothing moves: the deployments list names every revision the
        # service runs, and that list is protected already.
        log.info("cleanup_service_deployments_unreadable", app=run.app.name, error=str(exc))
        return True
    for arn, why in found.items():
        shielded.setdefault(arn, why)
    return True


def _keep(run: _Run, kind: Kind, items: Iterable[tuple[str, str]]) -> None:
    run.kept += [Kept(kind, name, why) for name, why in items]


async def _deregister(
    housekeeping: HousekeepingPort, run: _Run, plan: Plan[TaskDefinitionRevision]
) -> set[str]:
    """Deregister what the plan selects, oldest first; the ARNs that are (or would be) gone."""
    gone: set[str] = set()
    pending = sorted(plan.remove, key=lambda r: r.revision)
    for i, revision in enumerate(pending):
        detail = f"revision {revision.revision}"
        if run.dry_run:
            log.info(
                "task_definition_would_be_deregistered",
                app=run.app.name,
                task_definition=revision.arn,
            )
            run.removed.append(Removal("task_definition", revision.arn, detail, done=False))
            gone.add(revision.arn)
            continue
        try:
            await housekeeping.deregister(revision.arn)
        except ReconcilerError as exc:
            log.warning(
                "task_definition_deregister_failed",
                app=run.app.name,
                task_definition=revision.arn,
                error=str(exc),
            )
            run.removed.append(
                Removal("task_definition", revision.arn, detail, done=False, error=str(exc))
            )
            if isinstance(exc, TransientError):
                # AWS is busy: the rest waits for the next run rather than adding to it.
                rest = pending[i + 1 :]
                _keep(
                    run, "task_definition", ((r.arn, f"left for the next run: {exc}") for r in rest)
                )
                break
            continue
        log.info(
            "task_definition_deregistered",
            app=run.app.name,
            task_definition=revision.arn,
            revision=revision.revision,
        )
        run.removed.append(Removal("task_definition", revision.arn, detail, done=True))
        gone.add(revision.arn)
    return gone


async def _protected_outside(
    housekeeping: HousekeepingPort,
    run: _Run,
    listed: Sequence[TaskDefinitionRevision],
    shielded: Mapping[str, str],
) -> list[TaskDefinitionRevision] | None:
    """The protected revisions the family's ACTIVE listing lacks (another family, or
    INACTIVE yet still running), for their images; None when one cannot be read."""
    known = {revision_key(r.arn) for r in listed}
    outside: list[TaskDefinitionRevision] = []
    for arn in shielded:
        if revision_key(arn) in known:
            continue
        try:
            outside.append(await housekeeping.task_definition(arn))
        except ReconcilerError as exc:
            run.error(
                "cleanup_skipped", f"no image deleted: the images of {arn} are unknown: {exc}"
            )
            return None
    return outside


async def _delete_images(
    housekeeping: HousekeepingPort, run: _Run, *, keep: int, referenced: Sequence[str]
) -> None:
    repository = run.app.ecr_repository
    try:
        images = await housekeeping.images(repository)
    except ReconcilerError as exc:
        run.error("cleanup_failed", f"listing images of {repository!r}: {exc}")
        return
    plan = choose_images(images, keep=keep, referenced=referenced)
    _keep(run, "image", ((_image_name(repository, i), why) for i, why in plan.keep))
    if not plan.remove:
        return
    by_digest = {i.digest: i for i in plan.remove}
    if run.dry_run:
        results = [Deleted(i.digest, None) for i in plan.remove]
    else:
        results = await housekeeping.delete_images(repository, list(by_digest))
    for result in results:
        image = by_digest.get(result.digest)
        tags = ", ".join(image.tags) if image else ""
        name = f"{repository}@{result.digest}"
        if run.dry_run:
            log.info("image_would_be_deleted", app=run.app.name, image=name, tags=tags)
        elif result.error:
            log.warning(
                "image_delete_failed", app=run.app.name, image=name, tags=tags, error=result.error
            )
        else:
            log.info("image_deleted", app=run.app.name, image=name, tags=tags)
        run.removed.append(
            Removal(
                "image", name, tags, done=not run.dry_run and not result.error, error=result.error
            )
        )


def _image_name(repository: str, image: StoredImage) -> str:
    return f"{repository}@{image.digest}"


# Callers -------------------------------------------------------------------------------------


def protected_by(memory: AppMemory) -> dict[str, str]:
    """Task definitions the app's memory may still need: a hold's rollback target, and both
    sides of a deploy that was started."""
    protected: dict[str, str] = {}
    if memory.hold is not None and memory.hold.rollback_to:
        protected[memory.hold.rollback_to] = "a hold's rollback target"
    if memory.attempt is not None:
        protected[memory.attempt.task_definition] = "an attempted deploy"
        if memory.attempt.previous:
            protected.setdefault(memory.attempt.previous, "what ran before an attempted deploy")
    if memory.release is not None:
        for part in memory.release.parts:  # a failed release puts the services back on these
            if part.previous:
                protected.setdefault(part.previous, f"what {part.service} ran before a release")
            if part.task_definition:
                protected.setdefault(part.task_definition, f"released to {part.service}")
        for move in memory.release.schedules:  # a rollback may put a schedule back on it
            protected.setdefault(move.previous, f"what {move.schedule} ran before a release")
            protected.setdefault(move.task_definition, f"named by {move.schedule}")
    return protected


async def named_by_schedules_of(
    schedules: SchedulesPort | None, names: Sequence[str], services: Sequence[ServiceState]
) -> dict[str, str]:
    """Every task definition of the services' families the schedules `names` name now (a
    scheduled run of a deregistered revision fails)."""
    if schedules is None or not names:
        return {}
    families = {family_of(service.task_definition) for service in services}
    return await named_by_schedules(schedules, names, families)


def pinned_image(app: CleanupApp, memory: AppMemory) -> list[str]:
    """The image of an operator's pin, which the app is to run until unpinned."""
    return [f"{app.ecr_repository}:{memory.pin.revision}"] if memory.pin else []


async def after_rollout(
    ctx: PassContext, housekeeping: HousekeepingPort | None, *, previous: str | None = None
) -> CleanupReport | None:
    """Housekeeping once a rollout succeeded; None when it is off or failed (logged).

    `previous` is what the service ran before the rollout; it stays, as a hold's rollback
    target would, should the new revision be rolled back by hand.
    """
    app = ctx.app
    if housekeeping is None or not enabled(app):
        return None
    protected = protected_by(ctx.memory)
    if previous:
        protected.setdefault(previous, "what ran before this rollout")
    try:
        services = [await ctx.io.ecs.describe_service(app.cluster, s) for s in app.service_names]
        for arn, why in (
            await named_by_schedules_of(ctx.io.schedules, app.schedules, services)
        ).items():
            protected.setdefault(arn, why)
        report = await clean_up(
            housekeeping,
            app=app,
            service=services[0],
            others=services[1:],
            protected=protected,
            referenced=pinned_image(app, ctx.memory),
        )
    except Exception as exc:
        # Housekeeping never fails a deploy that succeeded; the next rollout tries again.
        log.warning("cleanup_failed", app=app.name, error=f"{type(exc).__name__}: {exc}")
        return None
    log.info(
        "cleanup_done",
        app=app.name,
        removed=sum(1 for r in report.removed if r.done),
        failed=sum(1 for r in report.removed if r.error),
        errors=len(report.errors),
    )
    return report
