#!/usr/bin/env bash
# Webhook latency benchmark (SPEC.md §9): a registry of the benchmark's own notifies the app's
# webhook; each run times `docker push` start → the new build answered over HTTP by the stage's
# new instance, and the median is compared with the budget of 3 s. Starts the dev services first
# (scripts/services.sh: Docker and the local registries).
#
#   scripts/bench-push-to-live.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/services.sh)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/docker-watcher-target}
exec cargo bench --locked --bench push_to_live
