#!/usr/bin/env bash
# Poll benchmark (SPEC.md §9): one small image pushed to 200 repositories of the local registry,
# 200 projects with a monitor-only `tag:v1` stage each, then full poll cycles of all 200 timed
# (min / median / max, registry requests per cycle) against the budget of 2 s per cycle.
# Starts the dev services first (scripts/services.sh: Docker and the local registries).
#
#   scripts/bench-poll.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/services.sh)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/docker-watcher-target}
exec cargo bench --locked --bench poll
