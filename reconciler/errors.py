"""The project's exception tree, typed by what the app loop should do next.

    ReconcilerError
    ├── ConfigError            the config file is invalid; carries one line per problem
    ├── TransientError         retry with backoff; never marks a revision as failed
    │   ├── PromotionWaiting       the source of a promotion has proved no revision yet
    │   ├── BranchEmpty            the repository has no commit yet: waiting for a push
    │   ├── GitUnavailable         remote unreachable, fetch failed
    │   ├── DockerUnavailable      engine socket down or not answering
    │   ├── RegistryUnavailable    registry down, push interrupted
    │   ├── AwsUnavailable         network error, throttling, 5xx
    │   └── LeaseNotHeld           another daemon holds the app, or the lease ran out
    ├── StalledError           needs a human (or a config change) before retrying helps
    │   ├── GitRevisionNotFound    branch deleted, pin names no commit
    │   ├── GitAuthError           wrong credential, unknown host key
    │   ├── AwsRejected            access denied, service or cluster missing, bad request
    │   │   └── ServiceDeploymentsUnreadable  refused or not kept in this region:
    │   │                          the service's `deployments` list says what is in use
    │   ├── ManifestError          the live task definition cannot be updated as asked
    │   ├── DefinitionError        the app's definition files do not render, parse or verify
    │   └── StateUnwritable        the app's state cannot be written, so no deploy may start
    ├── BuildFailed            the build itself failed (bad Dockerfile); retried a few times
    │   └── BuildContextRefused    the commit's context cannot be sent (too big, a bad
    │                              .dockerignore, a tree entry no checkout can hold)
    ├── NotForwarded           a nudge or sync for an app another daemon owns did not reach
    │                          the lease table (the request that asked for it is told)
    └── HostIdInUse            another running daemon has this daemon's [cluster].host_id

Adapters translate library exceptions into these at the edge (always `raise ... from exc`),
so the loop never sees botocore, aiodocker, aiohttp or pygit2 exceptions.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(ReconcilerError):
    """The config is invalid. `problems` holds one human-readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class TransientError(ReconcilerError):
    """Something we depend on is down or busy; the same pass may succeed later."""


class PromotionWaiting(TransientError):
    """The app a promoted app follows has not kept a revision live long enough yet."""


class BranchEmpty(TransientError):
    """The app's repository has no branch at all yet (created, never pushed to): nothing to
    deploy and nothing wrong. The loop waits for a push instead of retrying."""


class GitUnavailable(TransientError):
    """The git remote could not be reached or the fetch failed."""


class DockerUnavailable(TransientError):
    """The Docker engine is not reachable."""


class RegistryUnavailable(TransientError):
    """The image registry is not reachable or refused the push for a transient reason."""


class AwsUnavailable(TransientError):
    """AWS answered with throttling or a server error, or could not be reached."""


class MetricsUnavailable(TransientError):
    """A metric source (Prometheus, CloudWatch) did not answer now: asked again within the
    measurement's interval, never taken as a pass."""


class LeaseNotHeld(TransientError):
    """A write for an app whose lease this daemon does not hold (or cannot vouch for now)."""


class StalledError(ReconcilerError):
    """Retrying will not help until something outside the daemon changes."""


class GitRevisionNotFound(StalledError):
    """The branch, tag or commit the app asks for does not exist."""


class GitAuthError(StalledError):
    """The git remote refused the credential, or its host key is unknown."""


class AwsRejected(StalledError):
    """AWS refused the request for a reason that retrying does not fix."""


class ServiceDeploymentsUnreadable(AwsRejected):
    """ECS's service deployments cannot be read for a service: access denied, or a region
    or API that keeps none. Housekeeping then judges what is in use from the service's
    `deployments` list, as rollouts do."""


class MetricsRefused(StalledError):
    """A metric source refused the query (a bad query, several series where one is read):
    the measurement fails, asking again would not help."""


class ManifestError(StalledError):
    """The live task definition cannot be changed as the config asks."""


class DefinitionError(StalledError):
    """The app's definitions (SPEC 19) cannot be rendered, do not fit the ECS API, or name
    something that does not exist: one line naming the file and the JSON path, or the
    missing thing. Nothing is registered for the revision."""


class StateUnwritable(StalledError):
    """The app's state file cannot be written (disk full, read-only, permissions)."""


class BuildFailed(ReconcilerError):
    """The image build failed. `log_tail` holds the build's last output lines."""

    def __init__(self, message: str, *, log_tail: list[str] | None = None) -> None:
        self.log_tail = log_tail or []
        super().__init__(message)


class BuildContextRefused(BuildFailed):
    """The commit's build context cannot be sent as committed: over a size limit, a bad
    `.dockerignore`, a tree entry no checkout can hold. A failed build of that revision."""


class NotForwarded(ReconcilerError):
    """A nudge or sync for an app another daemon owns did not reach the lease table."""


class HostIdInUse(ReconcilerError):
    """Another daemon heartbeats under this daemon's host id: they may not share it."""
