#!/usr/bin/env bash
# The project's test command (the README's): makes sure dockerd and the two local registries run
# (scripts/services.sh), exports their addresses (DW_TEST_REGISTRY, DW_TEST_AUTH_REGISTRY and its
# user and password), then runs every test target. CI reads the "test result: ..." lines.
#
#   scripts/test.sh [cargo test arguments] [-- test binary arguments]
#   DW_SKIP_RELEASE_BUILD=1 scripts/test.sh apply   # a focused run without the release build
#   e.g. scripts/test.sh deploy -- --nocapture
#
# CARGO_TARGET_DIR defaults to /var/cache/docker-watcher-target, shared with .ci/run so that
# clippy, tests and repeated runs reuse one build cache outside the checkout.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Sourced, services.sh exports its variables here; a test without Docker or the registry must
# fail, not skip, under CI=true (SPEC §10), so a service failure stops us before any test runs.
if ! . scripts/services.sh; then
    echo "test: the test services did not start; not running the tests" >&2
    exit 1
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/docker-watcher-target}

# The container image test (tests/it/image.rs) runs the release binary, as users do; one
# release build per run, in the same target dir, which the benchmark scripts reuse too.
# DW_SKIP_RELEASE_BUILD=1 makes the image test use the test build's debug binary instead.
if [[ -z ${DW_SKIP_RELEASE_BUILD:-} ]]; then
    started=$SECONDS
    cargo build --release --locked --bin docker-watcher
    echo "test: release build took $((SECONDS - started)) s" >&2
    export DW_TEST_RELEASE_BINARY=$CARGO_TARGET_DIR/release/docker-watcher
fi
exec cargo test --all-targets --locked "$@"
