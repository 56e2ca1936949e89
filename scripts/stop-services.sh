#!/usr/bin/env bash
# Stop what host-services.sh started (and nothing else).
RUN_DIR="${RUN_DIR:-$PWD/.run}"
[[ -f $RUN_DIR/started ]] || exit 0
while read -r name pid; do
    kill "$pid" 2>/dev/null && echo "stopped $name"
done < "$RUN_DIR/started"
: > "$RUN_DIR/started"
