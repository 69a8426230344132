#!/usr/bin/env bash
# Notification benchmark (SPEC.md §9, "notification: event → receiver ≤ 1 s p99 with the API's
# p99 unaffected"): in one run, the API's p50/p99 under a steady read load while 1,000 events are
# published with no channel (the idle-notifier baseline) and then again with three channels
# (webhook, Slack, ntfy) delivering to a receiver on loopback; prints the event → receiver
# latency (p50, p99, max) of all 3,000 deliveries beside the budget. Needs no Docker.
#
#   scripts/bench-notify.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/docker-watcher-target}
echo "load: $(uptime)"
exec cargo bench --locked --bench notify
