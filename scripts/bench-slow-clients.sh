#!/usr/bin/env bash
# Slow clients against the API listener: 300 connections that each send the start of a request
# head and then one byte every 5 s (a slowloris), while 8 normal clients keep calling
# GET /healthz. Prints, for docker-watcher (and, side by side, for a baseline binary when
# BASELINE_BIN is given), how many slow connections the server still holds open after 10 s,
# 40 s and 95 s, and the normal clients' request count, p50 and p99 over the whole run. The
# API listener's header timeout (30 s by default) must close them all; before it had one, all
# 300 were still open after 95 s.
#
#   scripts/bench-slow-clients.sh                      # the release binary of this tree
#   PROFILE=debug scripts/bench-slow-clients.sh        # the debug binary (no release build)
#   BASELINE_BIN=/path/to/older/docker-watcher scripts/bench-slow-clients.sh
#   SLOW=300 DURATION=95 scripts/bench-slow-clients.sh
#
# Needs python3 (standard library only) and curl. Traffic stays on 127.0.0.1 (API ports 18281
# and 18282, proxy ports 18283 and 18284; BENCH_PORT_BASE moves them). No Docker engine is
# needed: the slow clients never get past the listener. Everything it starts is stopped when it
# exits.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SLOW=${SLOW:-300}
DURATION=${DURATION:-95}
PROFILE=${PROFILE:-release}
BASE=${BENCH_PORT_BASE:-18281}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/docker-watcher-target}

log() { printf 'bench-slow-clients: %s\n' "$*" >&2; }
die() {
    printf 'bench-slow-clients: ERROR: %s\n' "$*" >&2
    exit 1
}

if [[ -z ${DW_BIN:-} ]]; then
    if [[ $PROFILE == release ]]; then
        log "building the release binary"
        cargo build --release --locked --bin docker-watcher >&2
    else
        cargo build --locked --bin docker-watcher >&2
    fi
    DW_BIN="$CARGO_TARGET_DIR/$PROFILE/docker-watcher"
fi
[[ -x $DW_BIN ]] || die "no binary at $DW_BIN"

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/slow.py" <<'EOF'
# 300 slowloris clients and 8 normal ones against one API address; prints one result line.
import asyncio, sys, time

host, port, slow_count, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
checkpoints = [10.0, 40.0, duration]
open_flags = []

async def slow_client(i):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        open_flags.append(None)
        return
    index = len(open_flags)
    open_flags.append(True)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: bench\r\n")
        await writer.drain()
        while True:
            # The server closing shows as EOF on read; one byte of a header every 5 s otherwise.
            try:
                data = await asyncio.wait_for(reader.read(1024), timeout=5)
                if not data:
                    break
            except asyncio.TimeoutError:
                writer.write(b"x")
                await writer.drain()
    except (OSError, ConnectionError):
        pass
    open_flags[index] = False

latencies = []
async def normal_client(stop_at):
    while time.monotonic() < stop_at:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), timeout=10)
            writer.close()
            if answer.startswith(b"HTTP/1.1 200"):
                latencies.append(time.monotonic() - started)
        except (OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.05)

async def main():
    start = time.monotonic()
    slow = [asyncio.create_task(slow_client(i)) for i in range(slow_count)]
    normal = [asyncio.create_task(normal_client(start + duration)) for _ in range(8)]
    counts = []
    for checkpoint in checkpoints:
        await asyncio.sleep(max(0, start + checkpoint - time.monotonic()))
        counts.append(sum(1 for f in open_flags if f))
    for task in slow:
        task.cancel()
    await asyncio.gather(*normal, return_exceptions=True)
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
    print(f"{counts[0]:>5} {counts[1]:>5} {counts[2]:>5}   {len(latencies):>7} {pct(0.5):>8.1f} {pct(0.99):>8.1f}")

asyncio.run(main())
EOF

# Starts a binary on API port $2 and proxy port $3 with its own data dir; waits for /healthz.
start_server() { # NAME BIN API_PORT PROXY_PORT
    mkdir -p "$work/$1"
    DOCKER_WATCHER_ADMIN_PASSWORD=bench-admin-password \
        DOCKER_WATCHER_LOG=error \
        "$2" serve --listen "127.0.0.1:$3" --proxy-listen "127.0.0.1:$4" \
        --data-dir "$work/$1/data" >"$work/$1/log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 300); do
        curl -fsS -o /dev/null "http://127.0.0.1:$3/healthz" 2>/dev/null && return 0
        sleep 0.2
    done
    cat "$work/$1/log" >&2
    die "$1 did not answer on 127.0.0.1:$3"
}

run() { # NAME BIN API_PORT PROXY_PORT
    start_server "$@"
    log "$1: $SLOW slow clients for ${DURATION}s"
    printf '%-14s %s\n' "$1" "$(python3 "$work/slow.py" 127.0.0.1 "$3" "$SLOW" "$DURATION")"
}

log "machine load: $(uptime)"
printf '%-14s %s\n' "" "slow connections still open   normal clients (GET /healthz)"
printf '%-14s %s\n' "server" "  10s   40s  ${DURATION}s   requests  p50(ms)  p99(ms)"
if [[ -n ${BASELINE_BIN:-} ]]; then
    run baseline "$BASELINE_BIN" "$BASE" $((BASE + 2))
fi
run docker-watcher "$DW_BIN" $((BASE + 1)) $((BASE + 3))
