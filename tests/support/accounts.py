"""Apps in another sandbox account: moto files what an assumed role's credentials create
under the role's account."""

from __future__ import annotations

import boto3

from reconciler.sandbox.aws import SandboxAws
from reconciler.sandbox.provision import provision_app
from tests.support.world import World

OTHER_ACCOUNT_ROLE = "arn:aws:iam::111111111111:role/reconciler-deployer"
OTHER_REGION = "eu-west-1"


def assumed(aws: SandboxAws, role: str) -> tuple[str, str, str]:
    sts = boto3.client("sts", region_name=aws.region, endpoint_url=aws.endpoint_url)
    answer = sts.assume_role(RoleArn=role, RoleSessionName="provision")["Credentials"]
    return answer["AccessKeyId"], answer["SecretAccessKey"], answer["SessionToken"]


def in_account(world: World, *, role: str = OTHER_ACCOUNT_ROLE, region: str = OTHER_REGION) -> None:
    """Provision the World's app again, in the role's account and `region`, and point the
    app's config there."""
    provision_app(
        endpoint_url=world.aws.endpoint_url,
        region=region,
        cluster=world.cluster,
        service=world.name,
        ecr_repository=world.name,
        family=world.name,
        image=f"{world.registry}/{world.name}:bootstrap",
        credentials=assumed(world.aws, role),
    )
    world.app_overrides.update(region=region, role_arn=role, external_id="e2e-external-id")


def service_in(
    world: World, *, role: str = OTHER_ACCOUNT_ROLE, region: str = OTHER_REGION
) -> dict[str, object]:
    key, secret, token = assumed(world.aws, role)
    ecs = boto3.client(
        "ecs",
        region_name=region,
        endpoint_url=world.aws.endpoint_url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
    )
    return dict(ecs.describe_services(cluster=world.cluster, services=[world.name])["services"][0])
