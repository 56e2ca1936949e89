#!/bin/sh
# The pipeline the daemon replaces, step by step as the seed ran it (SPEC 22): clone, npm ci,
# npm test, docker build, docker push of the build tag and `latest`, aws ecs update-service,
# aws ecs wait services-stable. The service's task definition names `<image>:latest`, so
# --force-new-deployment is what rolls the new image out.
#
#   pipeline.sh REPO_URL REVISION IMAGE CLUSTER SERVICE WORK_DIR
#
# Environment: DOCKER (the docker CLI, BuildKit on), AWS (the aws CLI, or a stand-in that
# takes the same two commands), npm_config_cache (npm's cache, kept between runs as a CI
# runner keeps it), AWS_ENDPOINT_URL and credentials. Each step is timed on stdout:
# `STEP <name> <start> <end>` in seconds since the epoch.
set -eu
repo=$1 revision=$2 image=$3 cluster=$4 service=$5 work=$6

now() { date +%s.%N; }
step() {
    name=$1
    shift
    began=$(now)
    "$@"
    echo "STEP $name $began $(now)"
}

checkout() {
    git clone --quiet "$repo" "$work/src"
    git -C "$work/src" checkout --quiet "$revision"
}

step clone checkout
cd "$work/src"
step npm_ci npm ci --no-audit --no-fund --loglevel=error
step npm_test npm test --silent
step docker_build env DOCKER_BUILDKIT=1 "$DOCKER" build --quiet --network host \
    -t "$image:$revision" -t "$image:latest" .
step docker_push sh -c '"$DOCKER" push --quiet "$1" && "$DOCKER" push --quiet "$2"' \
    push "$image:$revision" "$image:latest"
step update_service $AWS ecs update-service --cluster "$cluster" --service "$service" \
    --force-new-deployment --output text --query service.serviceName
step wait_stable $AWS ecs wait services-stable --cluster "$cluster" --services "$service"
