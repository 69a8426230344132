#!/usr/bin/env bash
# Deploy strategies under load (SPEC §3 "Workloads"): the real release binary, two routed stages
# of one project on the local registry's busybox test image — one `start_first` (the baseline),
# one `stop_first` — and, in interleaved rounds, a redeploy of each while CLIENTS keep-alive
# clients send GETs through the proxy without pause. For each strategy it prints the requests
# that started during the deploys, how many failed (goal: 0), and how long they took (p50, p99,
# max): for `stop_first` that is how long the proxy held them while the old container stopped
# and the new one became healthy.
#
#   scripts/bench-stop-first.sh                       # 3 rounds, 32 clients
#   ROUNDS=5 CLIENTS=64 scripts/bench-stop-first.sh
#   DW_BINARY=path/to/docker-watcher scripts/bench-stop-first.sh   # a release binary built before
#
# The deploy window of one round runs from the deploy request to its answer; the load runs
# from 1 s before to 1 s after it. Requests are timed one by one by a small asyncio client
# (raw HTTP/1.1 keep-alive; wrk's histogram cannot be cut to a window). Ports: API
# BENCH_PORT_BASE (18291), proxy +1, on 127.0.0.1. Starts the dev services (Docker, registry)
# through scripts/services.sh; removes the containers and images it created when it ends.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-32}
BASE=${BENCH_PORT_BASE:-18291}
API_PORT=$BASE
PROXY_PORT=$((BASE + 1))
PASSWORD=bench-admin-password
STRATEGIES=(start_first stop_first)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/docker-watcher-target}

log() { printf 'bench-stop-first: %s\n' "$*" >&2; }
die() {
    printf 'bench-stop-first: ERROR: %s\n' "$*" >&2
    [[ -s ${work:-/nonexistent}/dw.log ]] && tail -n 20 "$work/dw.log" >&2
    exit 1
}

eval "$(scripts/services.sh)"
command -v jq >/dev/null || die "jq is missing (apt-get install jq)"
PYTHON=$(command -v python3) || die "python3 is missing"
registry=${DW_TEST_REGISTRY:-127.0.0.1:5000}

if [[ -n ${DW_BINARY:-} ]]; then
    DW=$DW_BINARY
else
    log "building the release binary"
    cargo build --release --locked --bin docker-watcher >&2
    DW="$CARGO_TARGET_DIR/release/docker-watcher"
fi

run_id="bench$$$(date +%s)"
repo="dwbench/stop-first-$run_id"
project="sf-$run_id"
work=$(mktemp -d)
dw_pid=''
cleanup() {
    [[ -n $dw_pid ]] && { kill "$dw_pid" 2>/dev/null || true; wait "$dw_pid" 2>/dev/null || true; }
    # Only what this run created: the project's containers and network, the images it pushed.
    ids=$(docker ps -aq --filter "label=io.docker-watcher.project=$project" 2>/dev/null || true)
    [[ -z $ids ]] || docker rm -f $ids >/dev/null 2>&1 || true
    docker network rm "dw-$project" >/dev/null 2>&1 || true
    images=$(docker images -q "$registry/$repo" 2>/dev/null | sort -u || true)
    [[ -z $images ]] || docker rmi -f $images >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

log "pushing the test image as v1 and v2"
scripts/test-image.sh "$registry/$repo:v1" --variant web --marker one >/dev/null
scripts/test-image.sh "$registry/$repo:v2" --variant web --marker two >/dev/null

DOCKER_WATCHER_DATA_DIR="$work/dw" \
    DOCKER_WATCHER_LISTEN="127.0.0.1:$API_PORT" \
    DOCKER_WATCHER_PROXY_LISTEN="127.0.0.1:$PROXY_PORT" \
    DOCKER_WATCHER_ADMIN_PASSWORD=$PASSWORD \
    DOCKER_WATCHER_LOG=warn \
    "$DW" serve >"$work/dw.log" 2>&1 &
dw_pid=$!
api="http://127.0.0.1:$API_PORT"
for _ in $(seq 1 100); do curl -fsS -o /dev/null "$api/healthz" 2>/dev/null && break; sleep 0.1; done
curl -fsS -o /dev/null "$api/healthz" || die "docker-watcher did not start"
csrf=$(curl -fsS -c "$work/cookies" -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" "$api/api/auth/login" | jq -r .csrf_token)
call() { # METHOD PATH [BODY]
    curl -fsS -X "$1" -b "$work/cookies" -H "X-CSRF-Token: $csrf" -H 'content-type: application/json' \
        ${3:+-d "$3"} "$api$2"
}
project_id=$(call POST /api/projects "{\"name\":\"$project\",\"image\":\"$registry/$repo\"}" | jq -r .id)
declare -A STAGE
for strategy in "${STRATEGIES[@]}"; do
    name=${strategy//_/-}
    STAGE[$strategy]=$(call POST "/api/projects/$project_id/stages" "$(jq -nc \
        --arg name "$name" --arg host "$name.$project.bench.test" --arg strategy "$strategy" \
        '{name: $name, tag_policy: "tag:v1", auto_deploy: false, hostname: $host, strategy: $strategy,
          container: {port: 8080, min_ready_seconds: 1}}')" | jq -r .id)
    status=$(call POST "/api/stages/${STAGE[$strategy]}/deploy" '{"tag":"v1"}' | jq -r .status)
    [[ $status == succeeded ]] || die "the first deploy of $strategy: $status"
done

cat >"$work/load.py" <<'EOF'
"""Keep-alive GET loops through the proxy around one deploy; prints the window's figures."""
import asyncio, json, sys, time, urllib.request

proxy_port, host, clients, api, stage, tag, csrf, cookie = sys.argv[1:9]
clients = int(clients)
done = []  # (started, finished, ok)

async def client(stop):
    reader = writer = None
    while not stop.is_set():
        started = time.monotonic()
        ok = False
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", int(proxy_port))
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
            lines = head.split(b"\r\n")
            length = next((int(l.split(b":")[1]) for l in lines if l.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            ok = lines[0].split()[1] == b"200"
            if any(l.lower() == b"connection: close" for l in lines):
                writer.close(); writer = None
        except Exception:
            if writer is not None:
                writer.close()
            writer = None
        done.append((started, time.monotonic(), ok))

def deploy():
    request = urllib.request.Request(
        f"{api}/api/stages/{stage}/deploy", data=json.dumps({"tag": tag}).encode(), method="POST",
        headers={"content-type": "application/json", "x-csrf-token": csrf, "cookie": cookie})
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.load(answer)["status"]

async def main():
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client(stop)) for _ in range(clients)]
    await asyncio.sleep(1)
    begin = time.monotonic()
    status = await asyncio.to_thread(deploy)
    end = time.monotonic()
    await asyncio.sleep(1)
    stop.set()
    await asyncio.gather(*tasks)
    window = sorted(f - s for s, f, ok in done if begin <= s <= end)
    failed = sum(1 for s, f, ok in done if not ok)
    pick = lambda q: window[min(len(window) - 1, int(q * len(window)))] * 1000 if window else 0
    print(status, len(window), failed, f"{pick(0.5):.1f}", f"{pick(0.99):.1f}",
          f"{window[-1] * 1000 if window else 0:.1f}", f"{(end - begin) * 1000:.0f}", len(done))

asyncio.run(main())
EOF
cookie=$(awk '$6 == "dw_session" {print "dw_session=" $7}' "$work/cookies")

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $load_before; $ROUNDS rounds, $CLIENTS clients"
: >"$work/results"
tag=v1
for round in $(seq 1 "$ROUNDS"); do
    tag=$([[ $tag == v1 ]] && echo v2 || echo v1)
    for i in 0 1; do
        strategy=${STRATEGIES[$(((i + round) % 2))]}
        name=${strategy//_/-}
        read -r status requests failed p50 p99 max deploy_ms total < <("$PYTHON" "$work/load.py" \
            "$PROXY_PORT" "$name.$project.bench.test" "$CLIENTS" "$api" "${STAGE[$strategy]}" "$tag" "$csrf" "$cookie")
        [[ $status == succeeded ]] || die "the redeploy of $strategy to $tag: $status"
        printf '%s %s %s %s %s %s %s\n' "$strategy" "$requests" "$failed" "$p50" "$p99" "$max" "$deploy_ms" >>"$work/results"
        printf '  round %s %-11s deploy %6s ms   requests %6s   failed %s   p50 %8s ms   p99 %8s ms   max %8s ms\n' \
            "$round" "$strategy" "$deploy_ms" "$requests" "$failed" "$p50" "$p99" "$max" >&2
    done
done

echo
echo "Redeploys under load: $CLIENTS keep-alive clients through the proxy, $ROUNDS rounds, medians of the rounds"
echo "(load average before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores)"
printf '%-12s %10s %18s %8s %10s %10s %10s\n' strategy "deploy ms" "requests in deploy" failed "p50 ms" "p99 ms" "max ms"
for strategy in "${STRATEGIES[@]}"; do
    median() { awk -v s="$strategy" -v c="$1" '$1 == s {print $c}' "$work/results" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
    failed_total=$(awk -v s="$strategy" '$1 == s {n += $3} END {print n + 0}' "$work/results")
    printf '%-12s %10s %18s %8s %10s %10s %10s\n' "$strategy" "$(median 7)" "$(median 2)" "$failed_total" \
        "$(median 4)" "$(median 5)" "$(median 6)"
done
echo "failed: all rounds together (goal 0); the other columns: medians over the rounds"
