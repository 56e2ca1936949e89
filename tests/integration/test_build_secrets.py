"""Build secrets on the real stack: BuildKit mounts them into the RUN steps that ask, and the
image, its history, its layers, the build's output lines and the CLI's command line never
hold them; SSM and Secrets Manager are read on the sandbox AWS with the app's own identity.

The builds check the secret by its SHA-256 (`test "$(sha256sum < /run/secrets/token ...)" =
HASH`), so the Dockerfile, which lands in the image's history, never holds the value; each
build has a marker of its own, so no RUN step comes from the cache (BuildKit leaves secret
values out of its cache keys).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import pytest

from reconciler.adapters.accounts import Accounts, account_of
from reconciler.adapters.build_secrets import BuildSecrets
from reconciler.adapters.docker import BuildResult, DockerEngine, SecretsNeedBuildKit
from reconciler.adapters.values import BuildRequest
from reconciler.config import BuildSecretSource
from reconciler.errors import AwsRejected, AwsUnavailable, BuildFailed
from reconciler.sandbox.aws import SandboxAws
from tests.integration.test_buildkit import remove_image, tar_context
from tests.support.accounts import OTHER_ACCOUNT_ROLE, OTHER_REGION, assumed
from tests.support.passes import app_config
from tests.support.processes import command_lines


def source(**given: str) -> BuildSecretSource:
    return BuildSecretSource.model_validate(given)


def checks(base_image: str, secret_id: str, value: bytes, *, then: str = "") -> str:
    """A Dockerfile that builds only if /run/secrets/<secret_id> holds `value`."""
    digest = hashlib.sha256(value).hexdigest()
    return (
        f"FROM {base_image}\n"
        f"RUN echo marker-{uuid.uuid4().hex}\n"
        f"RUN --mount=type=secret,id={secret_id} "
        f'test "$(sha256sum < /run/secrets/{secret_id} | cut -d" " -f1)" = "{digest}"\n'
        f"{then}"
    )


@pytest.fixture
def tag() -> Iterator[str]:
    name = f"reconciler-test/secrets-{uuid.uuid4().hex[:12]}:1"
    yield name
    remove_image(name)


@pytest.fixture
async def engine(docker_engine: str) -> AsyncIterator[DockerEngine]:
    client = DockerEngine(url=docker_engine, builder="buildkit", network="host")
    yield client
    await client.close()


async def build(
    engine: DockerEngine, tmp_path: Path, tag: str, dockerfile: str, secrets: dict[str, bytes]
) -> BuildResult:
    with tar_context(tmp_path, {"Dockerfile": dockerfile.encode()}) as context:
        request = BuildRequest(
            dockerfile="Dockerfile", tag=tag, build_args={}, target="", labels={}, secrets=secrets
        )
        return await engine.build(context, request)


def docker(*args: str) -> bytes:
    return subprocess.run(["docker", *args], capture_output=True, check=True, timeout=120).stdout


async def test_a_secret_reaches_its_run_step_and_nothing_the_image_keeps(
    engine: DockerEngine, base_image: str, tag: str, tmp_path: Path
) -> None:
    """The build passes only with the right value mounted; then the value is in neither the
    image's config, its history nor any of its layers, and the step that prints it (as is,
    and base64-encoded) shows `***` in the build's output."""
    value = f"token-{uuid.uuid4().hex}".encode()
    read = await BuildSecrets(region="us-east-1", environ={"NPM_TOKEN": value.decode()}).read(
        {"token": source(env="NPM_TOKEN")}
    )
    assert read == {"token": value}
    printing = (
        "RUN --mount=type=secret,id=token "
        'echo "printed: $(cat /run/secrets/token)"; base64 /run/secrets/token; sleep 1\n'
    )
    with pytest.raises(BuildFailed):  # the check is real: a wrong value fails the build
        await build(engine, tmp_path, tag, checks(base_image, "token", value), {"token": b"no"})

    seen: list[list[bytes]] = []  # every command line seen while the build ran
    building = asyncio.create_task(
        build(engine, tmp_path, tag, checks(base_image, "token", value, then=printing), read)
    )
    while not building.done():
        seen += (await asyncio.to_thread(command_lines)).values()
        await asyncio.sleep(0.05)
    result = building.result()

    encoded = base64.b64encode(value)
    assert any(tag.encode() in args for args in seen)  # the CLI was running and was seen
    assert not any(value in arg for args in seen for arg in args)
    output = "\n".join(result.log_tail)
    assert "printed: ***" in output  # the step's lines are there, the value scrubbed
    assert value.decode() not in output and encoded.decode() not in output
    saved = tmp_path / "image.tar"
    docker("image", "save", "-o", str(saved), tag)
    for what, text in [
        ("image config", docker("image", "inspect", tag)),
        ("history", docker("history", "--no-trunc", tag)),
        ("layers", saved.read_bytes()),
    ]:
        assert value not in text and encoded not in text, f"the secret is in the {what}"


async def test_a_binary_secret_goes_through_a_private_file_removed_after_the_build(
    engine: DockerEngine,
    base_image: str,
    tag: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NUL bytes cannot travel in an environment: the value is mounted from a 0600 file in
    the build's own directory, which is gone once the build ends."""
    value = os.urandom(48) + b"\x00\xff"
    (tmp_path / "cert").write_bytes(value)
    read = await BuildSecrets(region="us-east-1").read(
        {"cert": source(file=str(tmp_path / "cert"))}
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    await build(engine, tmp_path, tag, checks(base_image, "cert", value), read)
    assert list(scratch.iterdir()) == []


async def test_secrets_on_the_classic_builder_need_a_human(
    docker_engine: str, base_image: str, tmp_path: Path
) -> None:
    """The classic builder has no secret mounts: refused before the engine is asked."""
    classic = DockerEngine(url=docker_engine, builder="classic")
    try:
        with pytest.raises(SecretsNeedBuildKit) as raised:
            await build(classic, tmp_path, "x:1", f"FROM {base_image}\n", {"npmrc": b"x" * 8})
    finally:
        await classic.close()
    assert str(raised.value) == (
        "build_secrets (npmrc) need BuildKit, and builds use the classic builder"
        ' ([build].builder = "classic")'
    )


# SSM and Secrets Manager on the sandbox -------------------------------------------------


def sandbox_reader(aws: SandboxAws) -> BuildSecrets:
    return BuildSecrets(region=aws.region, endpoint_url=aws.endpoint_url)


async def test_ssm_and_secrets_manager_values_are_read_decrypted(aws: SandboxAws) -> None:
    name = f"/e2e/{uuid.uuid4().hex}/db-password"
    ssm = boto3.client("ssm", region_name=aws.region, endpoint_url=aws.endpoint_url)
    ssm.put_parameter(Name=name, Value="db-password-value", Type="SecureString")
    manager = boto3.client("secretsmanager", region_name=aws.region, endpoint_url=aws.endpoint_url)
    text_id, binary_id = f"e2e/{uuid.uuid4().hex}/api", f"e2e/{uuid.uuid4().hex}/cert"
    manager.create_secret(Name=text_id, SecretString="api-key-value")
    manager.create_secret(Name=binary_id, SecretBinary=b"\x00cert-bytes")
    values = await sandbox_reader(aws).read(
        {
            "db": source(ssm=name),
            "api": source(secretsmanager=text_id),
            "cert": source(secretsmanager=binary_id),
        }
    )
    assert values == {
        "db": b"db-password-value",
        "api": b"api-key-value",
        "cert": b"\x00cert-bytes",
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"ssm": "/nowhere/{id}"}, "build secret s (ssm /nowhere/{id}): GetParameter: Parameter"),
        (
            {"secretsmanager": "nowhere/{id}"},
            "build secret s (secretsmanager nowhere/{id}): GetSecretValue: "
            "ResourceNotFoundException",
        ),
    ],
    ids=["ParameterNotFound", "ResourceNotFound"],
)
async def test_a_secret_aws_does_not_have_needs_a_human(
    aws: SandboxAws, given: dict[str, str], message: str
) -> None:
    unique = uuid.uuid4().hex
    with pytest.raises(AwsRejected) as raised:
        await sandbox_reader(aws).read(
            {"s": source(**{k: v.format(id=unique) for k, v in given.items()})}
        )
    assert str(raised.value).startswith(message.format(id=unique))


async def test_access_denied_needs_a_human_and_throttling_is_transient(aws: SandboxAws) -> None:
    name = f"/e2e/{uuid.uuid4().hex}"
    boto3.client("ssm", region_name=aws.region, endpoint_url=aws.endpoint_url).put_parameter(
        Name=name, Value="v" * 8, Type="SecureString"
    )
    secrets = {"db": source(ssm=name)}
    try:
        aws.faults.inject("GetParameter", code="AccessDeniedException", message="not for you")
        with pytest.raises(AwsRejected, match=rf"build secret db \(ssm {name}\): .*AccessDenied"):
            await sandbox_reader(aws).read(secrets)
        aws.faults.inject("GetParameter", times=5, code="ThrottlingException", message="slow")
        with pytest.raises(AwsUnavailable, match=rf"build secret db \(ssm {name}\): .*Throttl"):
            await sandbox_reader(aws).read(secrets)
    finally:
        aws.faults.clear()
    assert await sandbox_reader(aws).read(secrets) == {"db": b"v" * 8}


async def test_an_app_with_a_role_reads_its_secrets_in_its_own_account(aws: SandboxAws) -> None:
    """The parameter lives in the role's account and region: the app reads it there, the
    daemon's own identity finds nothing by that name."""
    name = f"/e2e/{uuid.uuid4().hex}/token"
    key, secret, token = assumed(aws, OTHER_ACCOUNT_ROLE)
    boto3.client(
        "ssm",
        region_name=OTHER_REGION,
        endpoint_url=aws.endpoint_url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
    ).put_parameter(Name=name, Value="other-account-value", Type="SecureString")
    app = app_config(region=OTHER_REGION, role_arn=OTHER_ACCOUNT_ROLE, build_secrets={})
    secrets = {"token": source(ssm=name)}
    async with Accounts.open(endpoint_url=aws.endpoint_url, registry_override="") as accounts:
        reader = accounts.secrets(account_of(app, default_region=aws.region))
        assert await reader.read(secrets) == {"token": b"other-account-value"}
    with pytest.raises(AwsRejected, match="ParameterNotFound"):
        await BuildSecrets(region=OTHER_REGION, endpoint_url=aws.endpoint_url).read(secrets)
