#!/usr/bin/env bash
# Install (as root, on Debian/Ubuntu) and start the Docker engine and a local registry on
# 127.0.0.1:5000, unless they already answer. Sourced by scripts/test and scripts/demo.
# Writes what it started to $RUN_DIR/started so the caller can stop exactly that.
set -euo pipefail

RUN_DIR="${RUN_DIR:-$PWD/.run}"
mkdir -p "$RUN_DIR"
: > "$RUN_DIR/started"

docker_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
registry_up() { curl -fsS -o /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null; }

need_packages=()
command -v dockerd >/dev/null || need_packages+=(docker.io)
command -v docker-registry >/dev/null || need_packages+=(docker-registry)
command -v busybox >/dev/null || need_packages+=(busybox-static)
command -v curl >/dev/null || need_packages+=(curl)
command -v git >/dev/null || need_packages+=(git)
# tests/integration/test_git_ssh.py: a real sshd serving git; ssh-keygen makes its keys.
[[ -x /usr/sbin/sshd ]] && command -v ssh-keygen >/dev/null || need_packages+=(openssh-server)
# tests/integration/test_container.py: a local Debian base image for the daemon's own Dockerfile.
[[ -x /usr/sbin/debootstrap ]] || need_packages+=(debootstrap)
# tests/integration/test_systemd_unit.py: `systemd-analyze verify` of the unit.
command -v systemd-analyze >/dev/null || need_packages+=(systemd)
# tests/e2e/test_dashboard_browser.py: a headless Chromium that Playwright drives (it cannot
# download a browser of its own here), and fonts so its screenshots show text.
[[ -x /usr/bin/chromium ]] || need_packages+=(chromium)
[[ -d /usr/share/fonts/truetype/liberation ]] || need_packages+=(fonts-liberation)
# tests/e2e/test_proxy.py: a real reverse proxy in front of the daemon's listeners.
[[ -x /usr/sbin/nginx ]] || need_packages+=(nginx-light)
# tests/e2e/test_analysis.py, tests/integration/test_metrics.py: a real Prometheus that
# analysis checks query (each test starts its own on loopback; the system one is not started).
[[ -x /usr/bin/prometheus ]] || need_packages+=(prometheus)
# tests/e2e/test_fencing.py: daemons whose wall clocks run ahead or behind.
command -v faketime >/dev/null || need_packages+=(faketime)
if ((${#need_packages[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing packages: ${need_packages[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "installing ${need_packages[*]} ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # Install services (sshd, dockerd) without starting them system-wide: the tests start
    # their own instances on loopback.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
    fi
    apt-get install -y -qq "${need_packages[@]}" >/dev/null
    if ((created_policy)); then rm -f "$policy"; fi
fi

if ! docker_up; then
    echo "starting dockerd ..."
    # No bridge network and no iptables: builds must not need them, and this host has none.
    nohup dockerd --host unix:///var/run/docker.sock --bridge=none --iptables=false \
        --ip6tables=false >"$RUN_DIR/dockerd.log" 2>&1 &
    echo "dockerd $!" >> "$RUN_DIR/started"
    for _ in $(seq 60); do docker_up && break; sleep 0.5; done
    docker_up || { echo "dockerd did not start; see $RUN_DIR/dockerd.log" >&2; exit 1; }
fi

if ! registry_up; then
    echo "starting the registry on 127.0.0.1:5000 ..."
    mkdir -p "$RUN_DIR/registry"
    cat > "$RUN_DIR/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $RUN_DIR/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YAML
    nohup docker-registry serve "$RUN_DIR/registry.yml" >"$RUN_DIR/registry.log" 2>&1 &
    echo "registry $!" >> "$RUN_DIR/started"
    for _ in $(seq 40); do registry_up && break; sleep 0.25; done
    registry_up || { echo "the registry did not start; see $RUN_DIR/registry.log" >&2; exit 1; }
fi
