"""Verify a definition before anything is written for it (SPEC 19): the cluster, the roles
and their trust, the secrets and parameters, the log groups, the target groups and capacity
providers it names, asked of AWS with the app's identity, all at once.

A deploy verifies before it builds, promotes or registers, so a definition naming a missing
role costs neither a build nor a task definition revision, and the rollout that ECS would
fail with `ResourceInitializationError` never starts. A release of several services renders
and verifies every service's definition then: a worker's folder naming a missing secret
stops the release before the web has moved, rather than half-way through it.
"""

from __future__ import annotations

import structlog

from reconciler.adapters.ports import VerifierPort
from reconciler.app.stages.context import PassContext
from reconciler.app.stages.release import service_definition
from reconciler.config import AppConfig
from reconciler.decisions.definitions import DesiredDefinition
from reconciler.decisions.verification import checks_of, findings, too_many
from reconciler.errors import DefinitionError

log = structlog.get_logger("reconciler.pass")


async def verify(
    app: AppConfig, definition: DesiredDefinition, verifier: VerifierPort
) -> tuple[int, list[str]]:
    """How many checks were made, and one line per problem (none: verified)."""
    checks = checks_of(definition, cluster=app.cluster)
    refused = too_many(checks)
    if refused:
        return len(checks), [refused]
    answers = await verifier.answers([check.lookup for check in checks])
    return len(checks), findings(definition, checks, answers)


async def verified(ctx: PassContext) -> None:
    """Raise DefinitionError, one line naming every problem, unless the pass's definition
    verifies (or the app has none)."""
    if ctx.definition is None:
        return
    app = ctx.app
    definitions = {app.service: ctx.definition}
    for service in app.service_names[1:]:
        # Rendered now, so a file of a later service that does not render stops the
        # release before its first service moves (DefinitionError naming the file).
        definitions[service] = await service_definition(ctx, service)
    if ctx.io.verifier is None:
        return
    found: list[str] = []
    for service, definition in definitions.items():
        _, problems = await verify(app, definition, ctx.io.verifier)
        named = len(definitions) > 1
        found += [f"{service}: {problem}" if named else problem for problem in problems]
    if found:
        log.error("definition_unverified", findings=found)
        raise DefinitionError(f"not deploying {ctx.revision[:12]}: {'; '.join(found)}")
