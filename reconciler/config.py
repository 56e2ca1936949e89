"""The config file: pydantic-settings models, loading, and one-line validation messages.

A config is valid or it is refused whole, with one line per problem naming the app and the
key (`apps[web].rollout_timeout: invalid duration 'soon'`). Settings in [daemon], [aws] and
[webhook] may be overridden by RECONCILER_<SECTION>__<KEY> environment variables.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from reconciler.aio.loopback import is_loopback
from reconciler.decisions.analysis import Limits
from reconciler.decisions.durations import parse_duration
from reconciler.decisions.freeze import FreezeWindow, parse_cron, zone
from reconciler.decisions.repourl import has_credentials, normalise_repo_url
from reconciler.decisions.schedules import parse_ref
from reconciler.decisions.service_fields import SERVICE_FIELDS
from reconciler.errors import ConfigError

Duration = Annotated[float, BeforeValidator(parse_duration)]
APP_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
ECR_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
GIT_REF = re.compile(r"^[A-Za-z0-9._/-]+$")
DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
SHA = re.compile(r"[0-9a-f]{40}")
DOCKER_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?")


def _require_http_url(value: str) -> None:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"expected an http(s) URL, got {value!r}")


def _require_region(value: str) -> None:
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", value):
        raise ValueError(f"not an AWS region: {value!r}")


def _optional_path(value: object) -> object:
    """`""` in TOML means "not set"; keep it out of Path()."""
    return None if value == "" else _no_nul(value)


def _no_nul(value: object) -> object:
    # The OS refuses paths with NUL bytes only when they are used; refuse them at load time.
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("path contains a NUL byte")
    return value


OptionalPath = Annotated[Path | None, BeforeValidator(_optional_path)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DaemonSettings(_Section):
    # Webhooks and /healthz only: the one socket a forge must reach.
    listen: str = "127.0.0.1:8088"
    # Status, pages, events, metrics and actions: every request needs an identity.
    admin_listen: str = "127.0.0.1:8089"
    poll_interval: Duration = 60.0
    state_dir: Annotated[Path, BeforeValidator(_no_nul)] = Path("/var/lib/reconciler")
    max_concurrent_builds: int = Field(default=2, ge=1, le=64)
    log_format: Literal["json", "console", "auto"] = "auto"
    api_token_file: OptionalPath = None  # deprecated: one admin token; see [auth]
    # Where the Docker engine listens; empty: DOCKER_HOST or the default socket.
    docker_host: str = ""
    # How people reach the dashboard (links in commit statuses and chat); empty: listen.
    public_url: str = ""

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if value:
            _require_http_url(value)
        return value.rstrip("/")

    @field_validator("listen", "admin_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"expected host:port, got {value!r}")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def admin_host(self) -> str:
        return self.admin_listen.rpartition(":")[0].strip("[]")

    @property
    def admin_port(self) -> int:
        return int(self.admin_listen.rpartition(":")[2])

    @model_validator(mode="after")
    def _two_sockets(self) -> DaemonSettings:
        if self.port != 0 and self.port == self.admin_port:
            raise ValueError(
                f"listen and admin_listen share port {self.port}: webhooks and the admin "
                "face need a socket each"
            )
        return self


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"expected an address or CIDR (10.0.0.0/8, ::1), got {value!r}") from None


def _allowed_host(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?|\[[0-9A-Fa-f:.]+\](:\d+)?", value):
        raise ValueError(f"expected a host name or host:port, got {value!r}")
    return value.lower()


class AuthSettings(_Section):
    """Who may use the admin listener (SPEC: Who may reach, read and steer)."""

    # Named tokens with roles and app globs; empty: one admin token made in state_dir.
    tokens_file: OptionalPath = None
    # Proxies (addresses or CIDRs) whose X-Forwarded-User names a [[user]] of the tokens file.
    trusted_proxies: tuple[Annotated[str, AfterValidator(_cidr)], ...] = ()
    # Host names the admin listener answers besides its own address and public_url's host.
    allowed_hosts: tuple[Annotated[str, AfterValidator(_allowed_host)], ...] = ()


class AwsSettings(_Section):
    region: str = "us-east-1"
    endpoint_url: str = ""
    registry: str = ""

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        _require_region(value)
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value:
            _require_http_url(value)
        return value.rstrip("/")

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", value):
            raise ValueError(f"expected a registry host[:port] without scheme, got {value!r}")
        return value


class WebhookSettings(_Section):
    github_secret_file: OptionalPath = None
    gitlab_token_file: OptionalPath = None
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=100_000_000)


NOTIFY_EVENTS = (
    "deployed",
    "failed",
    "rolled_back",
    "rollback_failed",
    "test_failed",
    "pre_deploy_failed",
    # The approval gate (SPEC 21): a release waiting for people, and how it ended.
    "approval_requested",
    "rejected",
    "approval_expired",
)


class NotifySettings(_Section):
    urls_file: OptionalPath = None  # Apprise URLs, one a line
    events: tuple[str, ...] = NOTIFY_EVENTS

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(NOTIFY_EVENTS))
        if unknown:
            raise ValueError(
                f"unknown event {', '.join(unknown)}; known: {', '.join(NOTIFY_EVENTS)}"
            )
        return value


def _api_url(value: str) -> str:
    _require_http_url(value)
    return value.rstrip("/")


ApiUrl = Annotated[str, AfterValidator(_api_url)]


class GithubSettings(_Section):
    token_file: OptionalPath = None  # a token allowed to write commit statuses and deployments
    api_url: ApiUrl = "https://api.github.com"  # GitHub Enterprise: https://HOST/api/v3


class GitlabSettings(_Section):
    token_file: OptionalPath = None
    api_url: ApiUrl = "https://gitlab.com/api/v4"


class BuildSettings(_Section):
    # "auto": BuildKit through the Docker CLI when it is installed, else the engine's classic
    # builder; "buildkit" insists on BuildKit, "classic" never uses it.
    builder: Literal["auto", "buildkit", "classic"] = "auto"
    # The network of RUN steps: "" for the engine's default; "host" or "none" where the engine
    # has no bridge network.
    network: Literal["", "default", "host", "none"] = ""
    # The engines builds are spread over; empty: the one engine at daemon.docker_host.
    engines: tuple[str, ...] = ()
    # Client certificates for the tcp:// engines: all three or none, and a tcp:// engine needs
    # them. Its API unchecked is root on its host for anyone who reaches the port, so there is
    # no plain-TCP opt-out; a unix:// socket is guarded by its file permissions instead.
    tls_ca_file: OptionalPath = None
    tls_cert_file: OptionalPath = None
    tls_key_file: OptionalPath = None
    max_per_engine: int = Field(default=2, ge=1, le=64)
    # A build running longer is stopped and counts as a failed build: a RUN step that never
    # ends must not hold a build slot forever.
    timeout: Duration = 1800.0
    # Whoever pushes decides how big the build context is: past these (the tar in all, and
    # any one file of it, in MiB) the export stops and the build fails, before the spool
    # under state_dir fills the disk.
    max_context_mb: int = Field(default=2048, ge=1)
    max_file_mb: int = Field(default=512, ge=1)

    @field_validator("engines")
    @classmethod
    def _engines(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            tcp = re.fullmatch(r"tcp://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})", url)
            unix = re.fullmatch(r"unix:///[^\s\x00]+", url)
            if not (unix or (tcp and int(tcp.group(1)) < 65536)):
                raise ValueError(
                    f"engine {url!r} must be unix:///path/to/docker.sock or tcp://host:port"
                )
            if value.count(url) > 1:
                raise ValueError(f"engine {url!r} is listed twice")
        return value

    @model_validator(mode="after")
    def _tls(self) -> BuildSettings:
        files = {
            "tls_ca_file": self.tls_ca_file,
            "tls_cert_file": self.tls_cert_file,
            "tls_key_file": self.tls_key_file,
        }
        missing = [key for key, path in files.items() if path is None]
        tcp = [url for url in self.engines if url.startswith("tcp://")]
        if missing and len(missing) < len(files):
            raise ValueError(f"{', '.join(missing)} missing: the three TLS files go together")
        if tcp and missing:
            raise ValueError(
                f"engine {tcp[0]!r} needs tls_ca_file, tls_cert_file and tls_key_file"
                " (a Docker engine on TCP must check its clients)"
            )
        if not tcp and not missing:
            raise ValueError("the TLS files are for tcp:// engines, and engines lists none")
        return self

    def tls_files(self) -> tuple[Path, Path, Path] | None:
        """(CA, certificate, key) for the tcp:// engines, when set."""
        if self.tls_ca_file and self.tls_cert_file and self.tls_key_file:
            return self.tls_ca_file, self.tls_cert_file, self.tls_key_file
        return None


DYNAMODB_TABLE = re.compile(r"[A-Za-z0-9_.-]{3,255}")
HOST_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")


class DefinitionsSettings(_Section):
    """What the templates of `definitions` may read from the daemon."""

    # The daemon's environment variables env() may read, as globs ("APP_*"); empty: none.
    # Whoever can push to a tracked branch writes the templates, and a rendered value lands
    # in a task definition they can read back, so env() reaches only what is listed here.
    env_allow: tuple[str, ...] = ()

    @field_validator("env_allow")
    @classmethod
    def _env_allow(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not re.fullmatch(r"[A-Za-z0-9_*?]+", pattern):
                raise ValueError(f"not an environment variable name or glob: {pattern!r}")
        return value


class ClusterSettings(_Section):
    # The DynamoDB table the daemons share; empty: this daemon owns every app (state in
    # state_dir).
    lease_table: str = ""
    # How long a daemon's leases outlive its last heartbeat: a dead daemon's apps move after
    # this. Heartbeats go out every third of it.
    lease_ttl: Duration = Field(default=30.0, ge=3.0, le=3600.0)
    # This daemon's name in the table; empty: hostname and pid.
    host_id: str = ""
    # How long the table keeps an audit line (DynamoDB's TTL removes it after, within a day
    # or two); each daemon's own audit.jsonl keeps every line, for the host's log rotation.
    audit_keep: Duration = Field(default=400 * 86400.0, ge=86400.0, le=10 * 365 * 86400.0)

    @field_validator("lease_table")
    @classmethod
    def _table(cls, value: str) -> str:
        if value and not DYNAMODB_TABLE.fullmatch(value):
            raise ValueError(f"not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -): {value!r}")
        return value

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        if value and not HOST_ID.fullmatch(value):
            raise ValueError(f"host_id may hold 1-128 of A-Z a-z 0-9 _ . : @ -, not {value!r}")
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.lease_table)


def _command(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value or not value[0].strip():
        raise ValueError("command must not be empty")
    return value


Command = Annotated[tuple[str, ...], AfterValidator(_command)]


class AppTest(_Section):
    """A command run in a container of the built image before anything is pushed."""

    command: Command
    target: str = ""
    timeout: Duration = 600.0
    network: Literal["none", "bridge", "host"] = "none"
    env: dict[str, str] = Field(default_factory=dict)
    # The container's limits: a test that forks without end or eats memory fails alone,
    # and the build host stays up. The defaults suit a typical `npm test`.
    memory_mb: int = Field(default=1024, ge=16)  # no swap beyond it; /tmp counts toward it
    cpus: float = Field(default=1.0, gt=0)
    pids: int = Field(default=512, ge=16)
    read_only: bool = True  # read-only root filesystem; /tmp a tmpfs
    user: str = ""  # empty: the image's user

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if value and not DOCKER_USER.fullmatch(value):
            raise ValueError(
                f"user must be a name or uid, optionally :group or :gid, not {value!r}"
            )
        return value


class AppPreDeploy(_Section):
    """A one-off ECS task of the new task definition, run before the service update."""

    command: Command
    container: str = ""
    timeout: Duration = 900.0


MAX_APPROVAL_WAIT = (
    30 * 24 * 3600.0
)  # a request older than a month is not a decision anyone recalls
APPROVER_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,128}")


class AppApproval(_Section):
    """A release of the app waits for `required` approvals (SPEC 21) after its image is pushed
    and its task definition registered, before its service is updated."""

    required: int = Field(default=1, ge=1, le=10)
    # Token or user names allowed to approve; empty: any operator (or admin) of the app.
    approvers: tuple[str, ...] = ()
    expire_after: Duration = Field(default=24 * 3600.0, le=MAX_APPROVAL_WAIT)

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not APPROVER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a token or user name")
        if len(set(value)) != len(value):
            raise ValueError("an approver is named twice")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> AppApproval:
        if self.approvers and self.required > len(self.approvers):
            raise ValueError(
                f"required = {self.required} but only {len(self.approvers)} approvers are named"
            )
        return self


CHECK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_ANALYSIS = 24 * 3600.0  # interval x count: a longer analysis is a bake nobody waits for
CLOUDWATCH_QUERY_ID = re.compile(r"[a-z][A-Za-z0-9_]{0,254}")


class PrometheusSource(_Section):
    """An instant query of Prometheus' HTTP API (`/api/v1/query`), asked from the build
    host: a scalar, or a vector of at most one series."""

    url: str
    query: str = Field(min_length=1, max_length=10_000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        if parts.username is not None or parts.password is not None:
            # It would be shown in status, history and logs with the query.
            raise ValueError("must not carry credentials (user:password@)")
        if parts.query or parts.fragment:
            raise ValueError(f"expected the server's base URL, got {value!r}")
        return value.rstrip("/")


class CloudWatchSource(_Section):
    """GetMetricData's MetricDataQueries, as that call takes them, asked with the app's AWS
    identity; exactly one of them returns data (ReturnData, true by default): its newest
    value is the measurement."""

    metric_data_queries: tuple[dict[str, Any], ...] = Field(min_length=1, max_length=100)

    @field_validator("metric_data_queries")
    @classmethod
    def _queries(cls, value: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        ids = []
        for query in value:
            found = query.get("Id")
            if not isinstance(found, str) or not CLOUDWATCH_QUERY_ID.fullmatch(found):
                raise ValueError(
                    f"each query needs an Id (a lowercase letter, then letters, digits, _),"
                    f" got {found!r}"
                )
            if ("MetricStat" in query) == ("Expression" in query):
                raise ValueError(f"query {found!r}: give exactly one of MetricStat, Expression")
            ids.append(found)
        if len(set(ids)) != len(ids):
            raise ValueError("an Id is used twice")
        returned = [q["Id"] for q in value if q.get("ReturnData", True)]
        if len(returned) != 1:
            raise ValueError(
                f"exactly one query may return data (ReturnData = false on the others),"
                f" got {len(returned)}"
            )
        return value

    @property
    def returned(self) -> dict[str, Any]:
        """The query whose values are measured."""
        return next(q for q in self.metric_data_queries if q.get("ReturnData", True))

    def longest_period(self) -> int:
        periods = [
            int(q["MetricStat"].get("Period", 60))
            for q in self.metric_data_queries
            if isinstance(q.get("MetricStat"), dict)
        ]
        return max(periods, default=int(self.returned.get("Period", 60) or 60))


class AnalysisCheck(_Section):
    """One metric check of a release (SPEC 21): measured `count` times, `interval` apart,
    from the start of the bake (or of the rollout); more than `failure_limit` values past
    `max`/`min`, or no data with on_no_data = "fail", roll the release back."""

    name: str
    prometheus: PrometheusSource | None = None
    cloudwatch: CloudWatchSource | None = None
    max: float | None = None
    min: float | None = None
    interval: Duration = Field(ge=1.0, le=3600.0)
    count: int = Field(ge=1, le=1000)
    failure_limit: int = Field(default=0, ge=0)
    on_no_data: Literal["fail", "pass"] = "fail"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not CHECK_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a check name: use letters, digits, -, _ and .")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> AnalysisCheck:
        if (self.prometheus is None) == (self.cloudwatch is None):
            raise ValueError("give exactly one of prometheus, cloudwatch")
        if self.max is None and self.min is None:
            raise ValueError("give max, min or both: the bounds a value must stay within")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        if self.failure_limit >= self.count:
            raise ValueError(
                f"failure_limit {self.failure_limit} of {self.count} measurements: it could"
                " never fail"
            )
        if self.interval * self.count > MAX_ANALYSIS:
            raise ValueError(f"interval x count is over {MAX_ANALYSIS / 3600:g}h")
        return self

    def limits(self) -> Limits:
        """What judging the check's measurements needs."""
        return Limits(
            name=self.name,
            query=self.describe(),
            count=self.count,
            minimum=self.min,
            maximum=self.max,
            failure_limit=self.failure_limit,
            no_data_passes=self.on_no_data == "pass",
        )

    def describe(self) -> str:
        """The query as people read it, in reasons, status and history."""
        if self.prometheus is not None:
            return f"prometheus {self.prometheus.query}"
        assert self.cloudwatch is not None
        returned = self.cloudwatch.returned
        if "Expression" in returned:
            return f"cloudwatch {returned['Expression']}"
        stat = returned.get("MetricStat", {})
        metric = stat.get("Metric", {}) if isinstance(stat, dict) else {}
        dimensions = ",".join(
            f"{d.get('Name')}={d.get('Value')}"
            for d in metric.get("Dimensions", ())
            if isinstance(d, dict)
        )
        where = f"{{{dimensions}}}" if dimensions else ""
        return (
            f"cloudwatch {metric.get('Namespace', '?')}/{metric.get('MetricName', '?')}{where}"
            f" {stat.get('Stat', '?')}/{stat.get('Period', '?')}s"
        )


class AppCleanup(_Section):
    """How many of the app's own task definitions and SHA images to keep; 0: never clean."""

    keep_task_definitions: int = Field(default=0, ge=0)
    keep_images: int = Field(default=0, ge=0)


# BuildKit secret ids as `--secret id=...` takes them and RUN --mount names them; no comma
# (the CLI splits its value on commas), no slash (the id is a file name under /run/secrets).
BUILD_SECRET_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SSM_PARAMETER = re.compile(
    r"/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*(:[A-Za-z0-9_.-]+)?"
    r"|arn:aws[\w-]*:ssm:[a-z0-9-]+:\d{12}:parameter/[A-Za-z0-9_./-]+(:[A-Za-z0-9_.-]+)?"
)
SECRET_ID = re.compile(r"[A-Za-z0-9/_+=.@:-]{1,2048}")
SECRET_SOURCES = ("file", "env", "ssm", "secretsmanager")


def _secret_id(value: str) -> str:
    if not BUILD_SECRET_ID.fullmatch(value) or value in {".", ".."}:
        raise ValueError(
            f"{value!r} is not a BuildKit secret id: use letters, digits, '-', '_' and '.'"
        )
    return value


class BuildSecretSource(_Section):
    """Where one build secret's value is read at build time: exactly one of the four."""

    file: OptionalPath = None
    env: str | None = None
    ssm: str | None = None  # a parameter name (or ARN), read WithDecryption
    secretsmanager: str | None = None  # a secret's name or ARN

    @model_validator(mode="before")
    @classmethod
    def _a_table(cls, value: object) -> object:
        if not isinstance(value, dict | BuildSecretSource):
            raise ValueError(
                "expected a table: { file = ... }, { env = ... }, { ssm = ... } or"
                " { secretsmanager = ... }"
            )
        return value

    @field_validator("file")
    @classmethod
    def _file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"must be an absolute path, got {str(value)!r}")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError(f"not an environment variable name: {value!r}")
        return value

    @field_validator("ssm")
    @classmethod
    def _ssm(cls, value: str | None) -> str | None:
        if value is not None and not SSM_PARAMETER.fullmatch(value):
            raise ValueError(f"not an SSM parameter name or ARN: {value!r}")
        return value

    @field_validator("secretsmanager")
    @classmethod
    def _secretsmanager(cls, value: str | None) -> str | None:
        if value is not None and not SECRET_ID.fullmatch(value):
            raise ValueError(f"not a Secrets Manager secret name or ARN: {value!r}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> BuildSecretSource:
        given = [key for key in SECRET_SOURCES if getattr(self, key) is not None]
        if len(given) != 1:
            said = f"got {', '.join(given)}" if given else "got none"
            raise ValueError(f"give exactly one of {', '.join(SECRET_SOURCES)} ({said})")
        return self

    @property
    def kind(self) -> str:
        """`file`, `env`, `ssm` or `secretsmanager`."""
        return next(key for key in SECRET_SOURCES if getattr(self, key) is not None)

    @property
    def name(self) -> str:
        """The path, variable, parameter or secret id this source names."""
        return str(getattr(self, self.kind))

    def describe(self) -> str:
        """`ssm /prod/db/password`: the source, never its value, for messages."""
        return f"{self.kind} {self.name}"


BuildSecretId = Annotated[str, AfterValidator(_secret_id)]


def _relative_inside(value: str, *, key: str) -> str:
    """A path that stays inside the repository: relative, no `..`, no backslashes."""
    path = PurePosixPath(value)
    if value.startswith("/") or path.is_absolute():
        raise ValueError(f"{key} must be relative to the repository, got {value!r}")
    if ".." in path.parts or "\\" in value:
        raise ValueError(f"{key} must stay inside the repository, got {value!r}")
    return str(path)


# App keys the fingerprint leaves out while unset.
ADDED_KEYS = ("services", "schedules", "analysis")


class AppConfig(_Section):
    name: str
    repo: str
    branch: str = "main"
    revision: str = ""
    paths: tuple[str, ...] = ()
    context: str = "."
    dockerfile: str = "Dockerfile"
    build_args: dict[str, str] = Field(default_factory=dict)  # public: in the image's history
    # BuildKit secrets (RUN --mount=type=secret,id=KEY), read at build time, never stored.
    build_secrets: dict[BuildSecretId, BuildSecretSource] = Field(default_factory=dict)
    target: str = ""
    ecr_repository: str
    cluster: str
    service: str  # with `services`: their first (and may be left out)
    # Several services of one release, updated in this order, each rollout awaited before
    # the next starts (SPEC 20); default: [service].
    services: tuple[str, ...] = ()
    # EventBridge rules (`rule/<name>`) and Scheduler schedules (`schedule/<group>/<name>`)
    # whose ECS targets follow a release onto the new task definition of their family.
    schedules: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    rollout_timeout: Duration = 600.0
    rollback: bool = True
    suspended: bool = False
    git_token_file: OptionalPath = None
    git_ssh_key_file: OptionalPath = None
    extra_tags: tuple[str, ...] = ()
    promote_from: str = ""  # another app: deploy what it has proved, no build
    promote_after: Duration = 600.0  # ... once it has been live there this long
    region: str = ""  # default: [aws].region
    role_arn: str = ""  # assumed through STS for this app's ECS, ECR and RunTask calls
    external_id: str = ""
    environment: str = ""  # deployment environment name; default: the app's name
    url: str = ""  # where the app answers, shown with its deployments
    test: AppTest | None = None
    pre_deploy: AppPreDeploy | None = None
    approval: AppApproval | None = None  # a person approves each release before it goes out
    # Metric checks measured during the bake and after the rollout, before InSync (SPEC 21).
    analysis: tuple[AnalysisCheck, ...] = ()
    cleanup: AppCleanup = AppCleanup()
    # A folder of the repository holding task-definition.json (and service.json): the whole
    # service definition as code; empty: a copy of the live task definition, image changed.
    definitions: str = ""
    # Live differing from the definition without a deploy of ours: "alert" shows it,
    # "heal" deploys the definition again.
    drift: Literal["alert", "heal"] = "alert"
    # Service fields left to others (autoscaling, Terraform): never sent, never compared.
    ignore: tuple[str, ...] = ("desiredCount",)

    @model_validator(mode="before")
    @classmethod
    def _service_from_services(cls, value: object) -> object:
        """`services` alone names `service` too: its first."""
        if isinstance(value, dict) and "service" not in value:
            services = value.get("services")
            if isinstance(services, list | tuple) and services and isinstance(services[0], str):
                return {**value, "service": services[0]}
        return value

    @field_validator("services")
    @classmethod
    def _services(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            cls._ecs_name(name)
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"service {repeated[0]!r} is listed twice")
        return value

    @field_validator("schedules")
    @classmethod
    def _schedules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            parse_ref(text)
        repeated = sorted({text for text in value if value.count(text) > 1})
        if repeated:
            raise ValueError(f"schedule {repeated[0]!r} is listed twice")
        return value

    @field_validator("analysis")
    @classmethod
    def _analysis(cls, value: tuple[AnalysisCheck, ...]) -> tuple[AnalysisCheck, ...]:
        names = [check.name for check in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"check {repeated[0]!r} is named twice")
        return value

    @model_validator(mode="after")
    def _service_first(self) -> AppConfig:
        if self.services and self.services[0] != self.service:
            raise ValueError(
                f"service {self.service!r} must be the first of services "
                f"({', '.join(self.services)}), or left out"
            )
        return self

    @field_validator("definitions")
    @classmethod
    def _definitions(cls, value: str) -> str:
        if not value:
            return value
        return _relative_inside(value, key="definitions").rstrip("/") or "."

    @field_validator("ignore")
    @classmethod
    def _ignore(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [field for field in value if field not in SERVICE_FIELDS]
        if unknown:
            raise ValueError(
                f"unknown service field {unknown[0]!r}; known: {', '.join(SERVICE_FIELDS)}"
            )
        return value

    @field_validator("region")
    @classmethod
    def _app_region(cls, value: str) -> str:
        if value:
            _require_region(value)
        return value

    @field_validator("role_arn")
    @classmethod
    def _role_arn(cls, value: str) -> str:
        if value and not re.fullmatch(r"arn:aws[\w-]*:iam::\d{12}:role/[\w+=,.@/-]+", value):
            raise ValueError(f"not an IAM role ARN: {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value:
            _require_http_url(value)
        return value

    @field_validator("extra_tags")
    @classmethod
    def _extra_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not DOCKER_TAG.fullmatch(tag):
                raise ValueError(f"not a valid image tag: {tag!r}")
            if SHA.fullmatch(tag):
                raise ValueError(f"extra tag {tag!r} looks like a commit SHA, which names builds")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not APP_NAME.fullmatch(value):
            raise ValueError(
                f"app name {value!r} must be a DNS label: lowercase letters, digits and '-', "
                "at most 63 characters, starting and ending with a letter or digit"
            )
        return value

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        if has_credentials(value):
            raise ValueError("repo URL embeds a credential; put the token in git_token_file")
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if scheme == "git" or (scheme == "http" and not is_loopback(urlsplit(value).netloc)):
            # Nothing protects what travels over git:// or http://: a token in clear text, a
            # commit changed on the way. http:// stays for a mirror on this host.
            raise ValueError(f"repo {value!r} is not encrypted in transit; use https:// or ssh://")
        if not re.match(r"^(https://|http://|ssh://|file://|[\w.-]+@[\w.-]+:)", value):
            raise ValueError(
                f"repo must be an https://, ssh://, git@host:path or file:// URL, got {value!r}"
            )
        try:
            normalise_repo_url(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if not GIT_REF.fullmatch(value) or ".." in value or value.endswith((".lock", "/")):
            raise ValueError(f"not a valid branch name: {value!r}")
        return value

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str) -> str:
        if value and (not GIT_REF.fullmatch(value) or ".." in value):
            raise ValueError(f"not a commit SHA or tag: {value!r}")
        return value

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_relative_inside(p, key="paths entry").rstrip("/") for p in value)

    @field_validator("context")
    @classmethod
    def _context(cls, value: str) -> str:
        return _relative_inside(value, key="context")

    @field_validator("dockerfile")
    @classmethod
    def _dockerfile(cls, value: str) -> str:
        return _relative_inside(value, key="dockerfile")

    @field_validator("ecr_repository")
    @classmethod
    def _ecr_repository(cls, value: str) -> str:
        if not ECR_REPOSITORY.fullmatch(value):
            raise ValueError(f"not a valid repository name: {value!r}")
        return value

    @field_validator("cluster", "service")
    @classmethod
    def _ecs_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}|arn:aws[\w-]*:ecs:[\w:/-]+", value):
            raise ValueError(f"not an ECS name or ARN: {value!r}")
        return value

    @property
    def service_names(self) -> tuple[str, ...]:
        """The app's services, in the order a release updates them."""
        return self.services or (self.service,)

    @property
    def release_follows(self) -> bool:
        """Something follows the first service in a release: more services, or schedules."""
        return self.releases_parts or bool(self.schedules)

    @property
    def releases_parts(self) -> bool:
        """More than one service: a revision is a release of several parts (SPEC 20)."""
        return len(self.service_names) > 1

    @property
    def environment_name(self) -> str:
        return self.environment or self.name

    def fingerprint(self) -> str:
        """Changes whenever any key of this app changes (a config change clears a Failed hold)."""
        # Keys added since, left at their default, are left out: an upgrade changes no
        # fingerprint (and so clears no hold).
        unset = {key for key in ADDED_KEYS if not getattr(self, key)}
        return hashlib.sha256(self.model_dump_json(exclude=unset).encode()).hexdigest()[:16]


MAX_FREEZE = 31 * 24 * 3600.0  # a longer freeze is a suspension: `suspended = true` says so


class FreezeConfig(_Section):
    """A `[[freeze]]` table (SPEC 21): no new release of the apps its globs name starts
    during each window, from each time `cron` names (in `timezone`), for `duration`."""

    apps: tuple[str, ...] = Field(min_length=1)
    cron: str
    duration: Duration = Field(le=MAX_FREEZE)
    timezone: str = "UTC"
    reason: str = Field(min_length=1, max_length=200)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        parse_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        zone(value)
        return value

    def window(self) -> FreezeWindow:
        return FreezeWindow(
            apps=self.apps,
            cron=parse_cron(self.cron),
            duration=timedelta(seconds=self.duration),
            timezone=self.timezone,
            reason=self.reason,
        )


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECONCILER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    daemon: DaemonSettings = DaemonSettings()
    auth: AuthSettings = AuthSettings()
    aws: AwsSettings = AwsSettings()
    webhook: WebhookSettings = WebhookSettings()
    build: BuildSettings = BuildSettings()
    cluster: ClusterSettings = ClusterSettings()
    notify: NotifySettings = NotifySettings()
    github: GithubSettings = GithubSettings()
    gitlab: GitlabSettings = GitlabSettings()
    definitions: DefinitionsSettings = DefinitionsSettings()
    apps: tuple[AppConfig, ...] = ()
    freeze: tuple[FreezeConfig, ...] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: it overrides what the file says.
        return (env_settings, init_settings)

    def freeze_windows(self) -> tuple[FreezeWindow, ...]:
        return tuple(f.window() for f in self.freeze)

    def app(self, name: str) -> AppConfig | None:
        """The app called `name`; None when the config has none (a reload may take an app
        out while work for it is still under way)."""
        return next((app for app in self.apps if app.name == name), None)

    @model_validator(mode="after")
    def _admin_needs_identities(self) -> Config:
        """An admin listener other hosts can reach must know who calls it: the admin token
        made in state_dir is for those who can read files on this host."""
        if is_loopback(self.daemon.admin_host):
            return self
        auth = self.auth
        legacy = self.daemon.api_token_file
        if auth.tokens_file is None and not auth.trusted_proxies and legacy is None:
            raise ValueError(
                f"admin_listen {self.daemon.admin_listen} is not loopback: set "
                "auth.tokens_file or auth.trusted_proxies"
            )
        return self

    @model_validator(mode="after")
    def _unique_apps(self) -> Config:
        seen: set[str] = set()
        for app in self.apps:
            if app.name in seen:
                raise ValueError(f"duplicate app name {app.name!r}")
            seen.add(app.name)
        return self

    @model_validator(mode="after")
    def _promotions(self) -> Config:
        sources = {a.name: a.promote_from for a in self.apps if a.promote_from}
        for name, source in sources.items():
            if source not in {a.name for a in self.apps}:
                raise ValueError(f"apps[{name}].promote_from: unknown app {source!r}")
        for name, first in sources.items():
            chain, current = [name], first
            while current in sources:
                chain.append(current)
                if current == name:
                    raise ValueError(f"apps[{name}].promote_from: a cycle: {' -> '.join(chain)}")
                if current in chain[:-1]:
                    break  # a cycle that does not pass through `name`: said for its own apps
                current = sources[current]
        return self


def load_config(path: Path) -> Config:
    """Read and validate the config file; ConfigError lists every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError([f"{path}: file not found"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from exc
    return parse_config(text, source=str(path))


def parse_config(text: str, *, source: str = "config") -> Config:
    if not text.strip():
        raise ConfigError([f"{source}: file is empty"])
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from exc
    try:
        return Config(**raw)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, raw)) from exc
    except (TypeError, ValueError) as exc:  # env values that are not JSON, and such
        raise ConfigError([f"{source}: {exc}"]) from exc


def _problems(error: ValidationError, raw: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for item in error.errors():
        where = _location(item["loc"], raw)
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "missing required key"
        lines.append(f"{where}: {message}" if where else message)
    return list(dict.fromkeys(lines))


NAMED_LISTS = ("apps", "analysis")  # lists of tables with a `name`, said by it in errors


def _location(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    parts: list[str] = []
    index = 0
    table: object = raw  # the raw table `loc` is in so far
    while index < len(loc):
        key = loc[index]
        if key in NAMED_LISTS and index + 1 < len(loc) and isinstance(loc[index + 1], int):
            position = int(loc[index + 1])
            items = table.get(str(key)) if isinstance(table, dict) else None
            item = None
            if isinstance(items, list) and position < len(items):
                item = items[position]
            name = item.get("name") if isinstance(item, dict) else None
            said = name if isinstance(name, str) and name else position
            parts.append(f"{key}[{said}]")
            table = item
            index += 2
            continue
        table = table.get(str(key)) if isinstance(table, dict) else None
        if key != "[key]":  # pydantic's marker of a dict key's own error: the key says it
            parts.append(str(key))
        index += 1
    return ".".join(parts)
