#!/usr/bin/env bash
# Stop what host-services.sh started (and nothing else), and wait until each has exited, so
# a start right after finds no process (or dockerd pid file) of the one before.
RUN_DIR="${RUN_DIR:-$PWD/.run}"
[[ -f $RUN_DIR/started ]] || exit 0
while read -r name pid; do
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "stopped $name"
done < "$RUN_DIR/started"
: > "$RUN_DIR/started"
