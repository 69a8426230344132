#!/usr/bin/env bash
# Benchmark-only tools (not needed by the test suite): Debian's nginx and HAProxy as baselines,
# wrk as the load generator, and what the benchmark scripts use around them. Installs what is
# missing and nothing else; cheap to run before every benchmark. Each benchmark runs its own
# nginx/HAProxy instances on its own loopback ports and stops them; a system-wide service the
# packages may have started is left alone.
#
#   scripts/bench-deps.sh
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_SUSPEND=1

missing=()
have() { command -v "$1" >/dev/null || [[ -x /usr/sbin/$1 ]]; }
have nginx || missing+=(nginx)
have haproxy || missing+=(haproxy)
have wrk || missing+=(wrk)
have jq || missing+=(jq)
have curl || missing+=(curl)
have openssl || missing+=(openssl)
have ss || missing+=(iproute2)
have python3 || missing+=(python3)
if ((${#missing[@]})); then
    printf 'bench-deps: installing %s\n' "${missing[*]}" >&2
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
