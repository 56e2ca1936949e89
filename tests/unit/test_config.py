"""Config validation: every key, one clear line naming the app and key, nothing half-loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config import load_config, parse_config
from reconciler.errors import ConfigError
from tests.support.config import Table, TomlValue, app_table, config_text

WEB = app_table("web", "https://github.com/acme/web.git")
APP = config_text(apps=[WEB])


_FREEZE = """
[[freeze]]
apps = ["*-production"]
cron = "0 17 * * FRI"
duration = "64h"
timezone = "Europe/Berlin"
reason = "weekend"
"""


def test_a_freeze_table_is_read_as_a_window() -> None:
    """`[[freeze]]` tables become the windows the apps' passes consult."""
    (window,) = parse_config(APP + _FREEZE).freeze_windows()
    assert (window.apps, window.timezone, window.reason) == (
        ("*-production",),
        "Europe/Berlin",
        "weekend",
    )
    assert window.duration.total_seconds() == 64 * 3600
    assert window.cron.hours == {17}


def test_an_approval_table_is_read_with_its_defaults() -> None:
    """`[apps.approval]` with only `required`: any operator approves, requests lapse in 24h."""
    (app,) = parse_config(app_with(approval={"required": 2})).apps
    assert app.approval is not None
    assert (app.approval.required, app.approval.approvers) == (2, ())
    assert app.approval.expire_after == 24 * 3600
    (plain,) = parse_config(APP).apps
    assert plain.approval is None


PROM: Table = {
    "name": "5xx-rate",
    "prometheus": {"url": "http://prometheus:9090/", "query": "sum(rate(http_5xx[1m]))"},
    "max": 0.5,
    "interval": "30s",
    "count": 5,
}
CW_QUERIES: list[TomlValue] = [
    {
        "Id": "p99",
        "MetricStat": {
            "Metric": {
                "Namespace": "AWS/ApplicationELB",
                "MetricName": "TargetResponseTime",
                "Dimensions": [{"Name": "LoadBalancer", "Value": "app/web/1"}],
            },
            "Period": 60,
            "Stat": "p99",
        },
    }
]


def test_analysis_checks_are_read_with_their_defaults() -> None:
    """`[[apps.analysis]]`: failure_limit 0 and on_no_data "fail" unless said; the URL loses
    its trailing slash; each check says its query in words."""
    cw: Table = {"name": "latency", "cloudwatch": {"metric_data_queries": CW_QUERIES}}
    both = [PROM, {**cw, "min": 0, "interval": 60, "count": 3}]
    (app,) = parse_config(app_with(analysis=both)).apps
    prom, latency = app.analysis
    assert prom.prometheus is not None and prom.prometheus.url == "http://prometheus:9090"
    assert (prom.max, prom.min, prom.interval, prom.count) == (0.5, None, 30.0, 5)
    assert (prom.failure_limit, prom.on_no_data) == (0, "fail")
    assert prom.describe() == "prometheus sum(rate(http_5xx[1m]))"
    assert latency.describe() == (
        "cloudwatch AWS/ApplicationELB/TargetResponseTime{LoadBalancer=app/web/1} p99/60s"
    )
    assert not latency.limits().no_data_passes
    (plain,) = parse_config(APP).apps
    assert plain.analysis == ()


def test_an_app_without_analysis_keeps_its_fingerprint() -> None:
    """The key's arrival changes no fingerprint (which would clear every hold on upgrade):
    the minimal app's is the one daemons without `analysis` gave it; checks change it."""
    (app,) = parse_config(APP).apps
    assert app.fingerprint() == "2ace1e34a326eb76"
    (checked,) = parse_config(app_with(analysis=[PROM])).apps
    assert checked.fingerprint() != app.fingerprint()


def _check(**changes: TomlValue) -> Table:
    return {key: value for key, value in {**PROM, **changes}.items() if value != "-"}


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.problems


def app_with(**settings: TomlValue) -> str:
    """The minimal config, its app with these settings added."""
    return config_text(apps=[{**WEB, **settings}])


def with_section(**sections: Table) -> str:
    """The minimal config with these `[daemon]`, `[aws]` or `[webhook]` settings."""
    return config_text(**sections, apps=[WEB])


def without(table: Table, key: str) -> Table:
    return {k: v for k, v in table.items() if k != key}


def test_minimal_config_takes_the_documented_defaults() -> None:
    config = parse_config(APP)
    app = config.apps[0]
    assert (app.branch, app.context, app.dockerfile, app.rollout_timeout) == (
        "main",
        ".",
        "Dockerfile",
        600.0,
    )
    assert app.rollback is True and app.suspended is False
    assert config.daemon.poll_interval == 60.0
    assert config.daemon.listen == "127.0.0.1:8088"
    assert config.webhook.max_body_bytes == 1_048_576


def test_durations_accept_seconds_and_strings() -> None:
    config = parse_config(
        config_text(daemon={"poll_interval": "1m30s"}, apps=[{**WEB, "rollout_timeout": "1h"}])
    )
    assert config.daemon.poll_interval == 90.0
    assert config.apps[0].rollout_timeout == 3600.0


def test_a_build_is_stopped_after_thirty_minutes_unless_the_config_says_otherwise() -> None:
    assert parse_config(APP).build.timeout == 1800.0
    assert parse_config(with_section(build={"timeout": "1h30m"})).build.timeout == 5400.0


def test_a_build_context_is_bounded_at_2_gib_and_a_file_of_it_at_512_mib_by_default() -> None:
    build = parse_config(APP).build
    assert (build.max_context_mb, build.max_file_mb) == (2048, 512)
    build = parse_config(with_section(build={"max_context_mb": 100, "max_file_mb": 10})).build
    assert (build.max_context_mb, build.max_file_mb) == (100, 10)


BAD = {
    "unknown app key": (app_with(colour="blue"), "apps[web].colour: unknown key"),
    "unknown section key": (
        with_section(daemon={"listen_on": "x"}),
        "daemon.listen_on: unknown key",
    ),
    "unknown section": ("[deamon]\n" + APP, "deamon: unknown key"),
    "bad duration": (
        app_with(rollout_timeout="soon"),
        "apps[web].rollout_timeout: invalid duration 'soon'",
    ),
    "zero duration": (
        app_with(rollout_timeout=0),
        "apps[web].rollout_timeout: duration must be positive",
    ),
    "negative poll": (
        with_section(daemon={"poll_interval": -5}),
        "daemon.poll_interval: duration must be positive",
    ),
    "context escaping with ..": (
        app_with(context="../other"),
        "apps[web].context: context must stay inside the repository",
    ),
    "absolute context": (
        app_with(context="/etc"),
        "apps[web].context: context must be relative to the repository",
    ),
    "dockerfile escaping": (
        app_with(dockerfile="../../Dockerfile"),
        "apps[web].dockerfile: dockerfile must stay inside the repository",
    ),
    "absolute paths entry": (
        app_with(paths=["/svc"]),
        "apps[web].paths: paths entry must be relative",
    ),
    "app name not a DNS label": (
        app_with(name="Web_1"),
        "apps[Web_1].name: app name 'Web_1' must be a DNS label",
    ),
    "app name ending in a dash": (
        app_with(name="web-"),
        "must be a DNS label",
    ),
    "credentials in the repo URL": (
        app_with(repo="https://user:ghp_secret@github.com/acme/web.git"),
        "apps[web].repo: repo URL embeds a credential; put the token in git_token_file",
    ),
    "repo URL of an unknown kind": (
        app_with(repo="ftp://x/y"),
        "apps[web].repo: repo must be",
    ),
    "missing required key": (
        config_text(apps=[without(WEB, "cluster")]),
        "apps[web].cluster: missing required key",
    ),
    "duplicate app names": (config_text(apps=[WEB, WEB]), "duplicate app name 'web'"),
    "empty test command": (
        app_with(test={"command": []}),
        "apps[web].test.command: command must not be empty",
    ),
    "negative test timeout": (
        app_with(test={"command": ["npm", "test"], "timeout": -5}),
        "apps[web].test.timeout",
    ),
    "test on an unknown network": (
        app_with(test={"command": ["npm", "test"], "network": "wifi"}),
        "apps[web].test.network",
    ),
    "test memory below 16 MiB": (
        app_with(test={"command": ["npm", "test"], "memory_mb": 8}),
        "apps[web].test.memory_mb: Input should be greater than or equal to 16",
    ),
    "test memory not a whole number": (
        app_with(test={"command": ["npm", "test"], "memory_mb": "lots"}),
        "apps[web].test.memory_mb",
    ),
    "no test cpus": (
        app_with(test={"command": ["npm", "test"], "cpus": 0}),
        "apps[web].test.cpus: Input should be greater than 0",
    ),
    "negative test cpus": (
        app_with(test={"command": ["npm", "test"], "cpus": -1.5}),
        "apps[web].test.cpus: Input should be greater than 0",
    ),
    "test pids below 16": (
        app_with(test={"command": ["npm", "test"], "pids": 15}),
        "apps[web].test.pids: Input should be greater than or equal to 16",
    ),
    "test read_only not a boolean": (
        app_with(test={"command": ["npm", "test"], "read_only": "perhaps"}),
        "apps[web].test.read_only",
    ),
    "test user that is not a user": (
        app_with(test={"command": ["npm", "test"], "user": "root; rm -rf /"}),
        "apps[web].test.user: user must be a name or uid",
    ),
    "empty pre-deploy command": (
        app_with(pre_deploy={"command": [""]}),
        "apps[web].pre_deploy.command: command must not be empty",
    ),
    "negative pre-deploy timeout": (
        app_with(pre_deploy={"command": ["migrate"], "timeout": "-1m"}),
        "apps[web].pre_deploy.timeout",
    ),
    "pre-deploy without a command": (
        app_with(pre_deploy={"container": "app"}),
        "apps[web].pre_deploy.command: missing required key",
    ),
    "an extra tag that is not a tag": (
        app_with(extra_tags=["latest", "no spaces"]),
        "apps[web].extra_tags: not a valid image tag: 'no spaces'",
    ),
    "an extra tag that looks like a build": (
        app_with(extra_tags=["a" * 40]),
        "looks like a commit SHA",
    ),
    "unknown builder": (with_section(build={"builder": "kaniko"}), "build.builder"),
    "build timeout not a duration": (
        with_section(build={"timeout": "forever"}),
        "build.timeout: invalid duration 'forever'",
    ),
    "zero context limit": (
        with_section(build={"max_context_mb": 0}),
        "build.max_context_mb: Input should be greater than or equal to 1",
    ),
    "file limit not a number": (with_section(build={"max_file_mb": "big"}), "build.max_file_mb"),
    "zero build timeout": (
        with_section(build={"timeout": 0}),
        "build.timeout: duration must be positive",
    ),
    "unknown notify event": (
        with_section(notify={"events": ["deployed", "exploded"]}),
        "notify.events: unknown event exploded",
    ),
    "bad public url": (
        with_section(daemon={"public_url": "deploy.acme.dev"}),
        "daemon.public_url: expected an http(s) URL",
    ),
    "bad app url": (app_with(url="web.acme.dev"), "apps[web].url: expected an http(s) URL"),
    "bad listen": (with_section(daemon={"listen": "8088"}), "daemon.listen: expected host:port"),
    "zero builds": (
        with_section(daemon={"max_concurrent_builds": 0}),
        "daemon.max_concurrent_builds",
    ),
    "bad log format": (with_section(daemon={"log_format": "xml"}), "daemon.log_format"),
    "bad region": (with_section(aws={"region": "mars"}), "aws.region: not an AWS region"),
    "bad endpoint": (
        with_section(aws={"endpoint_url": "localhost:5000"}),
        "aws.endpoint_url: expected an http(s) URL",
    ),
    "registry with scheme": (
        with_section(aws={"registry": "http://127.0.0.1:5000"}),
        "aws.registry: expected a registry host",
    ),
    "tiny body limit": (with_section(webhook={"max_body_bytes": 10}), "webhook.max_body_bytes"),
    "repo over git://": (
        app_with(repo="git://github.com/acme/web.git"),
        "apps[web].repo: repo 'git://github.com/acme/web.git' is not encrypted in transit",
    ),
    "repo over http://": (
        app_with(repo="http://git.example.com/acme/web.git"),
        "use https:// or ssh://",
    ),
    "bad admin listen": (
        with_section(daemon={"admin_listen": "everywhere"}),
        "daemon.admin_listen: expected host:port",
    ),
    "one port for both": (
        with_section(daemon={"listen": "127.0.0.1:8088", "admin_listen": "127.0.0.1:8088"}),
        "daemon: listen and admin_listen share port 8088",
    ),
    "open admin without identities": (
        with_section(daemon={"admin_listen": "0.0.0.0:8089"}),
        "admin_listen 0.0.0.0:8089 is not loopback: set auth.tokens_file or auth.trusted_proxies",
    ),
    "bad trusted proxy": (
        with_section(auth={"trusted_proxies": ["10.0.0.0/33"]}),
        "auth.trusted_proxies.0: expected an address or CIDR",
    ),
    "bad allowed host": (
        with_section(auth={"allowed_hosts": ["https://deploy.acme.dev"]}),
        "auth.allowed_hosts.0: expected a host name",
    ),
    "bad branch": (app_with(branch="a..b"), "apps[web].branch: not a valid branch name"),
    "bad revision": (app_with(revision="x y"), "apps[web].revision: not a commit SHA or tag"),
    "bad ecr repository": (
        app_with(ecr_repository="Web!"),
        "apps[web].ecr_repository: not a valid repository name",
    ),
    "bad cluster": (
        app_with(cluster="a b"),
        "apps[web].cluster: not an ECS name or ARN",
    ),
    "rollback not a bool": (app_with(rollback="maybe"), "apps[web].rollback"),
    "build_args not strings": (app_with(build_args={"A": [1]}), "apps[web].build_args.A"),
    "build secret id with a space": (
        app_with(build_secrets={"npm rc": {"env": "NPMRC"}}),
        "apps[web].build_secrets.npm rc: 'npm rc' is not a BuildKit secret id",
    ),
    "build secret id with a comma": (
        app_with(build_secrets={"a,src=/etc/shadow": {"env": "X"}}),
        "apps[web].build_secrets.a,src=/etc/shadow: 'a,src=/etc/shadow' is not a BuildKit",
    ),
    "build secret id that is a path": (
        app_with(build_secrets={"..": {"env": "X"}}),
        "apps[web].build_secrets...: '..' is not a BuildKit secret id",
    ),
    "build secret from a relative file": (
        app_with(build_secrets={"npmrc": {"file": "secrets/npmrc"}}),
        "apps[web].build_secrets.npmrc.file: must be an absolute path, got 'secrets/npmrc'",
    ),
    "build secret from two sources": (
        app_with(build_secrets={"npmrc": {"env": "NPMRC", "ssm": "/npmrc"}}),
        "apps[web].build_secrets.npmrc: give exactly one of file, env, ssm, secretsmanager"
        " (got env, ssm)",
    ),
    "build secret from no source": (
        app_with(build_secrets={"npmrc": {}}),
        "apps[web].build_secrets.npmrc: give exactly one of file, env, ssm, secretsmanager"
        " (got none)",
    ),
    "build secret from an unknown source": (
        app_with(build_secrets={"npmrc": {"vault": "kv/npmrc"}}),
        "apps[web].build_secrets.npmrc.vault: unknown key",
    ),
    "build secret given as its value": (
        app_with(build_secrets={"npmrc": "//registry.npmjs.org/:_authToken=x"}),
        "apps[web].build_secrets.npmrc: expected a table: { file = ... }, { env = ... }",
    ),
    "build secret from a bad variable name": (
        app_with(build_secrets={"token": {"env": "NPM-TOKEN"}}),
        "apps[web].build_secrets.token.env: not an environment variable name: 'NPM-TOKEN'",
    ),
    "build secret from a bad parameter name": (
        app_with(build_secrets={"db": {"ssm": "/prod/db password"}}),
        "apps[web].build_secrets.db.ssm: not an SSM parameter name or ARN",
    ),
    "build secret from a bad secret id": (
        app_with(build_secrets={"key": {"secretsmanager": "prod api key"}}),
        "apps[web].build_secrets.key.secretsmanager: not a Secrets Manager secret name or ARN",
    ),
    "definitions outside the repository": (
        app_with(definitions="../deploy"),
        "apps[web].definitions: definitions must stay inside the repository",
    ),
    "definitions as an absolute path": (
        app_with(definitions="/deploy/ecs"),
        "apps[web].definitions: definitions must be relative to the repository",
    ),
    "an unknown drift mode": (app_with(drift="fix"), "apps[web].drift: Input should be"),
    "ignore of a field service.json cannot hold": (
        app_with(ignore=["taskDefinition"]),
        "apps[web].ignore: unknown service field 'taskDefinition'",
    ),
    "env_allow with a bad glob": (
        with_section(definitions={"env_allow": ["APP-*"]}),
        "definitions.env_allow: not an environment variable name or glob: 'APP-*'",
    ),
    "a freeze with a bad cron": (
        APP + _FREEZE.replace("0 17 * * FRI", "0 17 * FRI"),
        "freeze.0.cron: cron '0 17 * FRI' needs 5 fields",
    ),
    "a freeze in an unknown time zone": (
        APP + _FREEZE.replace("Europe/Berlin", "Europe/Atlantis"),
        "freeze.0.timezone: unknown time zone 'Europe/Atlantis'",
    ),
    "a freeze without a reason": (
        APP + _FREEZE.replace('reason = "weekend"', ""),
        "freeze.0.reason: missing required key",
    ),
    "a freeze longer than a month": (
        APP + _FREEZE.replace('"64h"', '"800h"'),
        "freeze.0.duration: Input should be less than or equal to 2678400",
    ),
    "a schedule of neither shape": (
        app_with(schedules=["nightly-report"]),
        "apps[web].schedules: not a schedule: 'nightly-report' (expected "
        "rule/<name> or schedule/<group>/<name>)",
    ),
    "a schedule listed twice": (
        app_with(schedules=["rule/nightly", "rule/nightly"]),
        "apps[web].schedules: schedule 'rule/nightly' is listed twice",
    ),
    "an approval that needs none": (
        app_with(approval={"required": 0}),
        "apps[web].approval.required: Input should be greater than or equal to 1",
    ),
    "an approval needing more approvers than named": (
        app_with(approval={"required": 2, "approvers": ["alice"]}),
        "apps[web].approval: required = 2 but only 1 approvers are named",
    ),
    "an approver that is no name": (
        app_with(approval={"approvers": ["alice bob"]}),
        "apps[web].approval.approvers: 'alice bob' is not a token or user name",
    ),
    "an approval that never lapses": (
        app_with(approval={"expire_after": "0s"}),
        "apps[web].approval.expire_after: duration must be positive, got '0s'",
    ),
    "an approval key misspelt": (
        app_with(approval={"approver": ["alice"]}),
        "apps[web].approval.approver: unknown key",
    ),
    "an analysis with two sources": (
        app_with(analysis=[_check(cloudwatch={"metric_data_queries": CW_QUERIES})]),
        "apps[web].analysis[5xx-rate]: give exactly one of prometheus, cloudwatch",
    ),
    "an analysis with no source": (
        app_with(analysis=[_check(prometheus="-")]),
        "apps[web].analysis[5xx-rate]: give exactly one of prometheus, cloudwatch",
    ),
    "an analysis without bounds": (
        app_with(analysis=[_check(max="-")]),
        "apps[web].analysis[5xx-rate]: give max, min or both",
    ),
    "an analysis whose min is above its max": (
        app_with(analysis=[_check(min=2)]),
        "apps[web].analysis[5xx-rate]: min 2 is above max 0.5",
    ),
    "an analysis that can never fail": (
        app_with(analysis=[_check(failure_limit=5)]),
        "apps[web].analysis[5xx-rate]: failure_limit 5 of 5 measurements: it could never fail",
    ),
    "an analysis without an interval": (
        app_with(analysis=[_check(interval="-")]),
        "apps[web].analysis[5xx-rate].interval: missing required key",
    ),
    "an analysis interval that is no duration": (
        app_with(analysis=[_check(interval="often")]),
        "apps[web].analysis[5xx-rate].interval: invalid duration 'often'",
    ),
    "an analysis of no measurements": (
        app_with(analysis=[_check(count=0)]),
        "apps[web].analysis[5xx-rate].count: Input should be greater than or equal to 1",
    ),
    "an analysis lasting over a day": (
        app_with(analysis=[_check(interval="1h", count=48)]),
        "apps[web].analysis[5xx-rate]: interval x count is over 24h",
    ),
    "an analysis on_no_data neither fail nor pass": (
        app_with(analysis=[_check(on_no_data="ignore")]),
        "apps[web].analysis[5xx-rate].on_no_data: Input should be 'fail' or 'pass'",
    ),
    "a prometheus URL that is not http": (
        app_with(analysis=[_check(prometheus={"url": "file:///etc/passwd", "query": "up"})]),
        "apps[web].analysis[5xx-rate].prometheus.url: expected an http(s) URL, got "
        "'file:///etc/passwd'",
    ),
    "a prometheus URL with credentials": (
        app_with(analysis=[_check(prometheus={"url": "https://u:p@prom", "query": "up"})]),
        "apps[web].analysis[5xx-rate].prometheus.url: must not carry credentials",
    ),
    "a prometheus query that is empty": (
        app_with(analysis=[_check(prometheus={"url": "http://prom:9090", "query": ""})]),
        "apps[web].analysis[5xx-rate].prometheus.query: String should have at least 1 character",
    ),
    "a cloudwatch query without an Id": (
        app_with(
            analysis=[
                _check(prometheus="-", cloudwatch={"metric_data_queries": [{"Expression": "1"}]})
            ]
        ),
        "apps[web].analysis[5xx-rate].cloudwatch.metric_data_queries: each query needs an Id",
    ),
    "cloudwatch queries that all return data": (
        app_with(
            analysis=[
                _check(
                    prometheus="-",
                    cloudwatch={
                        "metric_data_queries": [
                            *CW_QUERIES,
                            {"Id": "doubled", "Expression": "p99 * 2"},
                        ]
                    },
                )
            ]
        ),
        "apps[web].analysis[5xx-rate].cloudwatch.metric_data_queries: exactly one query may"
        " return data (ReturnData = false on the others), got 2",
    ),
    "an analysis check named twice": (
        app_with(analysis=[PROM, PROM]),
        "apps[web].analysis: check '5xx-rate' is named twice",
    ),
    "an analysis check with a bad name": (
        app_with(analysis=[_check(name="5xx rate")]),
        "apps[web].analysis[5xx rate].name: '5xx rate' is not a check name",
    ),
    "an analysis key misspelt": (
        app_with(analysis=[_check(maximum=1)]),
        "apps[web].analysis[5xx-rate].maximum: unknown key",
    ),
    "not TOML": ("[[apps]\nname=", "not valid TOML"),
    "empty file": ("", "file is empty"),
}


@pytest.mark.parametrize(("text", "expected"), list(BAD.values()), ids=list(BAD))
def test_bad_config_names_the_problem(text: str, expected: str) -> None:
    lines = problems(text)
    assert any(expected in line for line in lines), lines
    assert all("\n" not in line for line in lines)


@pytest.mark.parametrize(
    "auth",
    [
        {"tokens_file": "/etc/reconciler/tokens.toml"},
        {"trusted_proxies": ["127.0.0.1", "10.1.0.0/16"]},
    ],
)
def test_an_open_admin_listener_with_identities_is_accepted(auth: Table) -> None:
    config = parse_config(with_section(daemon={"admin_listen": "0.0.0.0:8089"}, auth=auth))
    assert (config.daemon.admin_host, config.daemon.admin_port) == ("0.0.0.0", 8089)  # noqa: S104


def test_a_repo_over_http_on_this_host_is_accepted() -> None:
    """A mirror on this host crosses no network."""
    assert parse_config(app_with(repo="http://127.0.0.1:8080/acme/web.git")).apps[0].repo


def test_the_two_listeners_default_to_loopback() -> None:
    daemon = parse_config(APP).daemon
    assert (daemon.listen, daemon.admin_listen) == ("127.0.0.1:8088", "127.0.0.1:8089")


def test_a_test_container_is_limited_by_default() -> None:
    test = parse_config(app_with(test={"command": ["npm", "test"]})).apps[0].test
    assert test is not None
    limits = (test.memory_mb, test.cpus, test.pids, test.read_only, test.user)
    assert limits == (1024, 1.0, 512, True, "")


def test_a_test_containers_limits_may_be_set_down_to_their_floors() -> None:
    gate: dict[str, TomlValue] = {
        "memory_mb": 16,
        "cpus": 0.25,
        "pids": 16,
        "read_only": False,
        "user": "node:1000",
    }
    test = parse_config(app_with(test={"command": ["npm", "test"], **gate})).apps[0].test
    assert test is not None
    assert (test.memory_mb, test.cpus, test.pids, test.read_only, test.user) == tuple(gate.values())


def test_build_secrets_take_one_source_each() -> None:
    """The four sources as SPEC section 17 writes them; a message names the source, never a
    value (there is none in the config)."""
    secrets: Table = {
        "npmrc": {"file": "/etc/reconciler/secrets/npmrc"},
        "npm_token": {"env": "NPM_TOKEN"},
        "db_password": {"ssm": "/prod/db/password"},
        "db.v3": {"ssm": "arn:aws:ssm:eu-west-1:123456789012:parameter/prod/db:3"},
        "api-key": {"secretsmanager": "prod/api-key"},
    }
    app = parse_config(app_with(build_secrets=secrets)).apps[0]
    assert {key: source.describe() for key, source in app.build_secrets.items()} == {
        "npmrc": "file /etc/reconciler/secrets/npmrc",
        "npm_token": "env NPM_TOKEN",
        "db_password": "ssm /prod/db/password",
        "db.v3": "ssm arn:aws:ssm:eu-west-1:123456789012:parameter/prod/db:3",
        "api-key": "secretsmanager prod/api-key",
    }
    assert parse_config(APP).apps[0].build_secrets == {}


def test_a_changed_build_secret_source_changes_the_apps_fingerprint() -> None:
    """Pointing a secret elsewhere is a config change: it clears a Failed hold."""
    before = parse_config(app_with(build_secrets={"t": {"env": "A"}})).apps[0].fingerprint()
    after = parse_config(app_with(build_secrets={"t": {"env": "B"}})).apps[0].fingerprint()
    assert before != after


def test_every_problem_is_reported_at_once() -> None:
    text = app_with(rollout_timeout="soon", colour="x", context="../x")
    assert len(problems(text)) == 3


def test_environment_overrides_daemon_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_DAEMON__POLL_INTERVAL", "5s")
    monkeypatch.setenv("RECONCILER_AWS__REGION", "eu-west-1")
    config = parse_config(APP)
    assert config.daemon.poll_interval == 5.0
    assert config.aws.region == "eu-west-1"


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml")
    assert caught.value.problems == [f"{tmp_path / 'nope.toml'}: file not found"]


def test_example_config_is_valid() -> None:
    config = load_config(Path(__file__).parents[2] / "config" / "reconciler.toml")
    assert config.apps


def test_a_config_change_changes_the_fingerprint() -> None:
    one = parse_config(APP).apps[0]
    two = parse_config(app_with(revision="v1.2.0")).apps[0]
    assert one.fingerprint() == parse_config(APP).apps[0].fingerprint()
    assert one.fingerprint() != two.fingerprint()


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        ({"lease_table": "x"}, "cluster.lease_table: not a DynamoDB table name"),
        ({"lease_table": "leases", "lease_ttl": "1s"}, "cluster.lease_ttl"),
        ({"host_id": "a b"}, "cluster.host_id: host_id may hold"),
        ({"lease_tabel": "leases"}, "cluster.lease_tabel"),
        ({"lease_table": "leases", "audit_keep": "1h"}, "cluster.audit_keep"),
    ],
)
def test_bad_cluster_settings_name_the_key(cluster: Table, expected: str) -> None:
    found = problems(config_text(cluster=cluster, apps=[WEB]))
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_lease_table_turns_the_cluster_on() -> None:
    config = parse_config(config_text(cluster={"lease_table": "leases"}, apps=[WEB]))
    assert config.cluster.enabled and config.cluster.lease_ttl == 30.0
    assert config.cluster.audit_keep == 400 * 86400
    assert not parse_config(config_text(apps=[WEB])).cluster.enabled


def test_an_app_is_found_by_its_name() -> None:
    """Config.app answers the app of that name, wherever it is listed, and None for a name
    the config does not have."""
    api = app_table("api", "https://github.com/acme/api.git", cluster="edge")
    config = parse_config(config_text(apps=[WEB, api]))
    found = config.app("api")
    assert found is not None
    assert (found.repo, found.cluster) == ("https://github.com/acme/api.git", "edge")
    assert config.app("web") is config.apps[0]
    assert config.app("billing") is None
    assert parse_config(APP).app("api") is None


def test_definitions_are_off_by_default_and_leave_desired_count_to_others() -> None:
    """Without `definitions` an app copies the live task definition; when set, drift is
    shown, not healed, and desiredCount belongs to autoscaling unless said otherwise."""
    app = parse_config(APP).apps[0]
    assert (app.definitions, app.drift, app.ignore) == ("", "alert", ("desiredCount",))
    app = parse_config(app_with(definitions="deploy/ecs/", drift="heal", ignore=[])).apps[0]
    assert (app.definitions, app.drift, app.ignore) == ("deploy/ecs", "heal", ())
    assert parse_config(app_with(definitions=".")).apps[0].definitions == "."
    assert parse_config(APP).definitions.env_allow == ()
