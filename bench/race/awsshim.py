"""`aws ecs update-service` and `aws ecs wait services-stable` for the pipeline script where the
aws CLI is not installed (and in quick mode, with a shorter wait), through boto3 as the CLI
goes through botocore: the same calls, and the same waiter (services-stable: DescribeServices
every `Delay` seconds, 15 by default as in the CLI, up to 40 times).

    python -m bench.race.awsshim ecs update-service --cluster C --service S --force-new-deployment
    python -m bench.race.awsshim ecs wait services-stable --cluster C --services S

The endpoint, region and credentials come from the environment (AWS_ENDPOINT_URL and the
rest); RACE_WAIT_DELAY sets the waiter's delay.
"""

from __future__ import annotations

import argparse
import os
import sys

import boto3

WAIT_DELAY = 15
WAIT_ATTEMPTS = 40


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="awsshim")
    parser.add_argument("service_name", choices=["ecs"])
    parser.add_argument("words", nargs="+")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--service")
    parser.add_argument("--services", nargs="+")
    parser.add_argument("--force-new-deployment", action="store_true")
    parser.add_argument("--output")
    parser.add_argument("--query")
    args = parser.parse_args(argv)
    ecs = boto3.client("ecs")
    if args.words == ["update-service"]:
        answer = ecs.update_service(
            cluster=args.cluster,
            service=args.service,
            forceNewDeployment=args.force_new_deployment,
        )
        print(answer["service"]["serviceName"])
        return 0
    if args.words == ["wait", "services-stable"]:
        delay = int(os.environ.get("RACE_WAIT_DELAY", WAIT_DELAY))
        ecs.get_waiter("services_stable").wait(
            cluster=args.cluster,
            services=args.services,
            WaiterConfig={"Delay": delay, "MaxAttempts": WAIT_ATTEMPTS},
        )
        return 0
    parser.error(f"unknown command {' '.join(args.words)}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
