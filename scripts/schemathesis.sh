#!/usr/bin/env bash
# The OpenAPI document against the server it describes: schemathesis (PyPI, 4.x, in a virtualenv
# this script makes) runs every check it has against a live docker-watcher built from this tree,
# with an admin's API token, and fails on any failure — a 5xx other than a documented 503, an
# answer or status the document does not describe, data the document allows that the server
# refuses or data it forbids that the server takes.
#
#   scripts/schemathesis.sh                  # alone (needs the debug binary; builds it if missing)
#   MAX_TIME=60 scripts/schemathesis.sh      # a shorter run while iterating
#   SEED=42 scripts/schemathesis.sh          # reproduce a run (the seed is printed at the start)
#   DW_SCHEMATHESIS_BIN=/path/to/docker-watcher scripts/schemathesis.sh   # another binary
#   scripts/schemathesis.sh --include-path-regex '/api/projects'   # extra schemathesis flags
#
# Not yet part of scripts/test.sh: the document still has known failures to fix. To make it
# green, and keep it so when you add or change an endpoint: describe every status it can
# answer (4xx with `ErrorBody`, 415 for a body that is not JSON comes from `ApiJson`), bound
# every input the server bounds (`minimum: 1` on ids, `minLength`, enums, patterns) and refuse
# everything the document forbids; then run this script alone with the flags above. Reports
# (JUnit, NDJSON) go to $REPORT_DIR.
#
# Safety: the server and schemathesis run in a network namespace of their own with loopback
# only (unshare --net), so nothing the fuzzer makes up — an image on some registry, a
# notification URL, a proxy target — can reach another machine. The server still talks to the
# Docker engine over its unix socket, with an installation id of its own (a fresh data dir), so
# it touches nothing of anyone else's. Two passes: the first covers every operation except those
# that can revoke the run's own credentials (deleting tokens or users, changing a password,
# logging out), the second covers those with fresh credentials.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCHEMATHESIS_VERSION=4.32.5
VENV=${DW_SCHEMATHESIS_VENV:-/var/lib/docker-watcher-dev/schemathesis-venv}
MAX_TIME=${MAX_TIME:-150}
SEED=${SEED:-$RANDOM}
PORT=${DW_SCHEMATHESIS_PORT:-18391}
REPORT_DIR=${REPORT_DIR:-${TMPDIR:-/tmp}/docker-watcher-schemathesis}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/docker-watcher-target}

log() { printf 'schemathesis: %s\n' "$*" >&2; }
die() {
    printf 'schemathesis: ERROR: %s\n' "$*" >&2
    exit 1
}

# Operations that can end the run's own credentials: tested in a pass of their own.
CREDENTIAL_OPS='^(PATCH|DELETE) /api/users/\{id\}$|^DELETE /api/tokens/\{id\}$|^POST /api/auth/logout$'

if [[ ${1:-} != --in-namespace ]]; then
    # --- outside: the tools, then the same script again in a namespace of its own -------------
    command -v unshare >/dev/null || die "unshare (util-linux) is needed"
    if [[ ! -x $VENV/bin/schemathesis ]] ||
        [[ $("$VENV/bin/schemathesis" --version 2>/dev/null) != *"$SCHEMATHESIS_VERSION"* ]]; then
        log "installing schemathesis $SCHEMATHESIS_VERSION in $VENV"
        python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
        "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" >&2
    fi
    BIN=${DW_SCHEMATHESIS_BIN:-$CARGO_TARGET_DIR/debug/docker-watcher}
    if [[ ! -x $BIN || -n ${DW_SCHEMATHESIS_BUILD:-} ]]; then
        cargo build --locked --bin docker-watcher >&2
    fi
    mkdir -p "$REPORT_DIR"
    export DW_SCHEMATHESIS_BIN=$BIN VENV MAX_TIME SEED PORT REPORT_DIR
    exec unshare --net bash "${BASH_SOURCE[0]}" --in-namespace "$@"
fi
shift

# --- inside the namespace: loopback only ---------------------------------------------------------
ip link set lo up 2>/dev/null || true
work=$(mktemp -d)
server=
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

PASSWORD=schemathesis-admin-password
DOCKER_WATCHER_ADMIN_PASSWORD=$PASSWORD DOCKER_WATCHER_LOG=${DOCKER_WATCHER_LOG:-warn} \
    "$DW_SCHEMATHESIS_BIN" serve --listen "127.0.0.1:$PORT" --proxy-listen 127.0.0.1:0 \
    --data-dir "$work/data" >"$work/server.log" 2>&1 &
server=$!
base=http://127.0.0.1:$PORT
for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$base/healthz" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; die "the server exited"; }
    sleep 0.2
done

# An admin API token (the fuzzer may log out sessions, but not this).
new_token() {
    curl -fsS -c "$work/jar" -H 'content-type: application/json' \
        -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" "$base/api/auth/login" >"$work/login.json"
    local csrf
    csrf=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["csrf_token"])' "$work/login.json")
    curl -fsS -b "$work/jar" -H 'content-type: application/json' -H "x-csrf-token: $csrf" \
        -d '{"name":"schemathesis"}' "$base/api/tokens" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

run_pass() { # NAME TIME [schemathesis flags...]
    local name=$1 time=$2
    shift 2
    local token
    token=$(new_token)
    log "pass '$name': ${time}s, seed $SEED"
    "$VENV/bin/schemathesis" run "$base/api/openapi.json" \
        --checks all \
        --header "Authorization: Bearer $token" \
        --max-time "$time" \
        --workers 2 \
        --seed "$SEED" \
        --request-timeout 30 \
        --report junit,ndjson --report-dir "$REPORT_DIR/$name" \
        --warnings off \
        "$@"
}

status=0
run_pass main "$MAX_TIME" --exclude-name-regex "$CREDENTIAL_OPS" "$@" || status=1
run_pass credentials $((MAX_TIME / 5 + 10)) --include-name-regex "$CREDENTIAL_OPS" "$@" || status=1
if grep -q 'panicked' "$work/server.log"; then
    grep -n -A5 'panicked' "$work/server.log" >&2
    log "the server panicked"
    status=1
fi
exit $status
