#!/usr/bin/env bash
# Stale-scan benchmark (SPEC.md §9: a scan of 10,000 instances and containers in ≤ 1 s with one
# Docker list call): a scan over 1,000 real containers created (not started) on the local engine,
# and one over 10,000 instances with the engine's list response scaled to 10,000 entries. Prints
# each scan's time beside the budget and the Docker API calls it made. Needs dockerd and the
# local registry (scripts/services.sh); removes the containers it creates. A few minutes on 2 cores.
#
#   scripts/bench-stale.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/docker-watcher-target}
exec cargo bench --locked --bench stale_scan
