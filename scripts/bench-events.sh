#!/usr/bin/env bash
# Event-log benchmark (SPEC.md §9): 1,000,000 events inserted through the store, then filtered
# pages queried over HTTP from the real `docker-watcher serve` binary, and the server's idle
# resident memory. Prints each figure beside its budget. Takes a few minutes on 2 cores.
#
#   scripts/bench-events.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/docker-watcher-target}
exec cargo bench --locked --bench event_log
