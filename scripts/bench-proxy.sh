#!/usr/bin/env bash
# Reverse-proxy benchmark (SPEC.md §9): docker-watcher's proxy (the real release binary, a
# standalone proxy route created through the API) against nginx and HAProxy as reverse proxies,
# all three in front of the same upstream, under the same wrk load, with the same number of
# workers (one per core: docker-watcher's worker threads, nginx `worker_processes auto`,
# HAProxy `nbthread` = cores). Scenarios run in interleaved rounds (every round runs every
# scenario on every proxy, in rotating order) and the table shows medians:
#
#   get-64     small GET (612 B), 64 keep-alive connections
#   get-512    small GET, 512 connections
#   get-100k   100 KB responses, 64 connections
#   get-1m     1 MB responses, 64 connections
#   post-64k   64 KB POST bodies, 64 connections, to an upstream location that reads every
#              body before answering (nginx `mirror_request_body on`, then a 612 B answer)
#   close      a new connection per request (`Connection: close`), 64 connections
#   https      small GET over TLS (keep-alive), 64 connections
#
# Then, once per proxy: 5,000 idle keep-alive clients (one request each, then silent): resident
# memory per client and upstream connections held; and the slow-client scenario: 300 uploaders
# sending a 100-byte body one byte every 5 s, while 64 normal clients run small GETs — the normal
# clients' p99 and the upstream connections held.
#
#   scripts/bench-proxy.sh                         # 3 rounds of 8 s per scenario and proxy
#   ROUNDS=5 DURATION=10s SCENARIOS="get-64 post-64k" scripts/bench-proxy.sh
#   DW_BINARY=path/to/docker-watcher scripts/bench-proxy.sh   # a release binary built before
#
# The configurations (below, in full) match what docker-watcher does: HTTP/1.1 upstream
# keep-alive, X-Forwarded-For/-Proto/-Host set, access logs off, request bodies buffered up to
# 64 KiB (nginx `client_body_buffer_size 64k`, HAProxy has no body buffering by default and
# streams). All traffic stays on 127.0.0.1, ports BENCH_PORT_BASE (18181) to +12. Tools come
# from scripts/bench-deps.sh. On a 2-core machine wrk, the upstream and the proxy share the
# cores: compare the ratios in one run, not absolute numbers across machines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
THREADS=${THREADS:-2}
SCENARIOS=${SCENARIOS:-"get-64 get-512 get-100k get-1m post-64k close https"}
IDLE_CLIENTS=${IDLE_CLIENTS:-5000}
SLOW_CLIENTS=${SLOW_CLIENTS:-300}
SLOW_SECONDS=${SLOW_SECONDS:-20}
BASE=${BENCH_PORT_BASE:-18181}
UPSTREAM_PORT=$BASE
DW_API_PORT=$((BASE + 1))
declare -A HTTP_PORT=([nginx]=$((BASE + 2)) [haproxy]=$((BASE + 3)) [docker-watcher]=$((BASE + 4)))
declare -A HTTPS_PORT=([nginx]=$((BASE + 5)) [haproxy]=$((BASE + 6)) [docker-watcher]=$((BASE + 7)))
PROXIES=(nginx haproxy docker-watcher)
HOST=bench.example.test
PASSWORD=bench-admin-password
CORES=$(nproc)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/docker-watcher-target}

log() { printf 'bench-proxy: %s\n' "$*" >&2; }
die() {
    printf 'bench-proxy: ERROR: %s\n' "$*" >&2
    for log in "${work:-/nonexistent}"/*.log; do
        [[ -s $log ]] && { printf -- '--- %s ---\n' "$log" >&2; tail -n 15 "$log" >&2; }
    done
    exit 1
}

scripts/bench-deps.sh
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
PYTHON=$(command -v python3)

if [[ -n ${DW_BINARY:-} ]]; then
    DW=$DW_BINARY
else
    log "building the release binary"
    cargo build --release --locked --bin docker-watcher >&2
    DW="$CARGO_TARGET_DIR/release/docker-watcher"
fi

work=$(mktemp -d)
chmod 755 "$work" # nginx workers run unprivileged and read the upstream's files
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # URL [HOST]
    for _ in $(seq 1 100); do
        if curl -kfsS -o /dev/null ${2:+-H "Host: $2"} "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$1 did not answer"
}

# --- the upstream: nginx with static files, and a POST location that reads every body --------
mkdir -p -m 755 "$work/www" "$work/upstream" "$work/nginx" "$work/haproxy" "$work/tls"
head -c 612 /dev/zero | tr '\0' 'x' >"$work/www/small.html"
cp "$work/www/small.html" "$work/www/post"
head -c 102400 /dev/zero | tr '\0' 'x' >"$work/www/100k.bin"
head -c 1048576 /dev/zero | tr '\0' 'x' >"$work/www/1m.bin"
temp_paths() { echo "client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1; uwsgi_temp_path $1; scgi_temp_path $1;"; }
cat >"$work/upstream/nginx.conf" <<EOF
daemon off; master_process on; error_log stderr warn;
worker_processes 1;
pid $work/upstream/nginx.pid;
events { worker_connections 16384; }
http {
    access_log off; $(temp_paths "$work/upstream")
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT backlog=4096;
        location / { root $work/www; }
        # POST bodies are read whole (the mirror subrequest needs them) before the answer: the
        # small file (a POST to a static file is a 405, turned into the file with 200).
        location = /post {
            client_max_body_size 2m; client_body_buffer_size 128k;
            mirror /discard; mirror_request_body on;
            error_page 405 =200 /small.html;
            root $work/www;
        }
        location = /discard { internal; return 204; }
    }
}
EOF
"$NGINX" -p "$work/upstream" -c "$work/upstream/nginx.conf" 2>"$work/upstream.log" &
pids+=($!)

# --- TLS certificate for the three HTTPS listeners -------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" \
    -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
cat "$work/tls/cert.pem" "$work/tls/key.pem" >"$work/tls/combined.pem"

# --- nginx as a reverse proxy -------------------------------------------------------------------
cat >"$work/nginx/nginx.conf" <<EOF
daemon off; master_process on; error_log stderr warn;
worker_processes $CORES;
worker_rlimit_nofile 20000;
pid $work/nginx/nginx.pid;
events { worker_connections 16384; }
http {
    access_log off; $(temp_paths "$work/nginx")
    keepalive_requests 1000000;
    client_max_body_size 10m; client_body_buffer_size 64k;
    upstream backend {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:${HTTP_PORT[nginx]} backlog=4096;
        listen 127.0.0.1:${HTTPS_PORT[nginx]} ssl backlog=4096;
        ssl_certificate $work/tls/cert.pem; ssl_certificate_key $work/tls/key.pem;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host 127.0.0.1:$UPSTREAM_PORT;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
        }
    }
}
EOF
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx.log" &
nginx_pid=$!
pids+=($nginx_pid)

# --- HAProxy as a reverse proxy -------------------------------------------------------------------
cat >"$work/haproxy/haproxy.cfg" <<EOF
global
    nbthread $CORES
    maxconn 9000
    tune.ssl.default-dh-param 2048
defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse safe
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 60s
    timeout http-keep-alive 60s
frontend bench
    bind 127.0.0.1:${HTTP_PORT[haproxy]}
    bind 127.0.0.1:${HTTPS_PORT[haproxy]} ssl crt $work/tls/combined.pem alpn http/1.1
    maxconn 9000
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header Host 127.0.0.1:$UPSTREAM_PORT
    default_backend upstream
backend upstream
    server u1 127.0.0.1:$UPSTREAM_PORT maxconn 9000
EOF
"$HAPROXY" -W -db -f "$work/haproxy/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=($haproxy_pid)

# --- docker-watcher, with a standalone proxy to the upstream created through the API -----------
cat >"$work/dw.toml" <<EOF
proxy_https_listen = "127.0.0.1:${HTTPS_PORT[docker-watcher]}"
[[proxy.tls]]
hostname = "$HOST"
cert = "$work/tls/cert.pem"
key = "$work/tls/key.pem"
EOF
DOCKER_WATCHER_CONFIG="$work/dw.toml" \
    DOCKER_WATCHER_DATA_DIR="$work/dw" \
    DOCKER_WATCHER_LISTEN="127.0.0.1:$DW_API_PORT" \
    DOCKER_WATCHER_PROXY_LISTEN="127.0.0.1:${HTTP_PORT[docker-watcher]}" \
    DOCKER_WATCHER_ADMIN_PASSWORD=$PASSWORD \
    DOCKER_WATCHER_LOG=warn \
    "$DW" serve >"$work/dw.log" 2>&1 &
dw_pid=$!
pids+=($dw_pid)

wait_for "http://127.0.0.1:$UPSTREAM_PORT/small.html"
wait_for "http://127.0.0.1:$DW_API_PORT/healthz"
api="http://127.0.0.1:$DW_API_PORT"
csrf=$(curl -fsS -c "$work/cookies" -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" "$api/api/auth/login" | jq -r .csrf_token)
curl -fsS -b "$work/cookies" -H "X-CSRF-Token: $csrf" -H 'content-type: application/json' \
    -d "{\"name\":\"bench\",\"hostname\":\"$HOST\",\"target_url\":\"http://127.0.0.1:$UPSTREAM_PORT/\"}" \
    "$api/api/proxies" >/dev/null
for proxy in "${PROXIES[@]}"; do
    wait_for "http://127.0.0.1:${HTTP_PORT[$proxy]}/small.html" "$HOST"
    wait_for "https://127.0.0.1:${HTTPS_PORT[$proxy]}/small.html" "$HOST"
done

# The processes whose memory and CPU count for each proxy.
proxy_pids() {
    case $1 in
    nginx) pgrep -P "$nginx_pid" ;;
    haproxy) echo "$haproxy_pid"; pgrep -P "$haproxy_pid" || true ;;
    docker-watcher) echo "$dw_pid" ;;
    esac
}
rss_kib() { # PIDS...
    local total=0 rss
    for pid in "$@"; do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${rss:-0}))
    done
    echo "$total"
}
upstream_connections() { # PROXY: its established TCP connections to the upstream
    local pids
    pids=$(proxy_pids "$1" | paste -sd'|')
    ss -Htnp state established "( dport = :$UPSTREAM_PORT )" 2>/dev/null | grep -cE "pid=($pids)," || true
}
to_ms() { # wrk latency like 1.23ms, 850.00us, 1.02s
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { printf "%s", v } }'
}

cat >"$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF

# scenario PROXY NAME: the wrk command line of a scenario against a proxy.
scenario_args() {
    local proxy=$1 name=$2 http="http://127.0.0.1:${HTTP_PORT[$1]}"
    case $name in
    get-64) echo "-c64 $http/small.html" ;;
    get-512) echo "-c512 $http/small.html" ;;
    get-100k) echo "-c64 $http/100k.bin" ;;
    get-1m) echo "-c64 $http/1m.bin" ;;
    post-64k) echo "-c64 -s $work/post.lua $http/post" ;;
    close) echo "-c64 -H Connection:close $http/small.html" ;;
    https) echo "-c64 https://127.0.0.1:${HTTPS_PORT[$proxy]}/small.html" ;;
    *) die "unknown scenario $name" ;;
    esac
}

# run PROXY SCENARIO: one wrk run; appends "scenario proxy rps p50 p99 errors" to results.
run() {
    local proxy=$1 name=$2 out
    # shellcheck disable=SC2046 # the arguments are words
    out=$(wrk -t"$THREADS" -d"$DURATION" --latency -H "Host: $HOST" $(scenario_args "$proxy" "$name") 2>&1)
    local rps p50 p99 errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errors=$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
    printf '%s %s %s %s %s %s\n' "$name" "$proxy" "${rps:-0}" "${p50:-0}" "${p99:-0}" "$errors" >>"$work/results"
    printf '  %-9s %-15s %10s req/s   p50 %8s ms   p99 %8s ms   errors %s\n' "$name" "$proxy" "$rps" "$p50" "$p99" "$errors" >&2
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "warming up; load average before: $load_before"
for proxy in "${PROXIES[@]}"; do
    for name in $SCENARIOS; do
        # shellcheck disable=SC2046
        wrk -t"$THREADS" -d1s -H "Host: $HOST" $(scenario_args "$proxy" "$name") >/dev/null 2>&1 || true
    done
done

: >"$work/results"
for round in $(seq 1 "$ROUNDS"); do
    log "round $round of $ROUNDS (load average $(cut -d' ' -f1 /proc/loadavg))"
    for name in $SCENARIOS; do
        # Rotate which proxy goes first, so none always runs on a cooler machine.
        for i in 0 1 2; do
            run "${PROXIES[$(((i + round) % 3))]}" "$name"
        done
    done
done

# --- idle keep-alive clients and slow uploaders (once per proxy) ------------------------------
cat >"$work/clients.py" <<'EOF'
"""Idle clients (one request each, then silent) or slow uploaders (a body one byte at a time)."""
import asyncio, sys

mode, port, count, host, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])

async def idle(opened, ready):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /small.html HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    opened.append(writer)
    ready.set() if len(opened) == count else None

async def slow():
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /post HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\n\r\n".encode())
    await writer.drain()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(5)
    writer.close()

async def main():
    if mode == "idle":
        opened, ready = [], asyncio.Event()
        sem = asyncio.Semaphore(200)
        async def one():
            async with sem:
                await idle(opened, ready)
        await asyncio.gather(*(one() for _ in range(count)))
        print("ready", flush=True)
        await asyncio.sleep(seconds)
    else:
        tasks = []
        for _ in range(count):
            tasks.append(asyncio.create_task(slow()))
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks, return_exceptions=True)

asyncio.run(main())
EOF

declare -A IDLE_KIB IDLE_UPSTREAM SLOW_P99 SLOW_UPSTREAM SLOW_RPS
for proxy in "${PROXIES[@]}"; do
    log "$IDLE_CLIENTS idle keep-alive clients on $proxy"
    # shellcheck disable=SC2046
    before=$(rss_kib $(proxy_pids "$proxy"))
    coproc IDLE { "$PYTHON" "$work/clients.py" idle "${HTTP_PORT[$proxy]}" "$IDLE_CLIENTS" "$HOST" 15; }
    read -r _ <&"${IDLE[0]}" || true
    sleep 3
    # shellcheck disable=SC2046
    after=$(rss_kib $(proxy_pids "$proxy"))
    IDLE_KIB[$proxy]=$(awk -v a="$after" -v b="$before" -v n="$IDLE_CLIENTS" 'BEGIN {printf "%.2f", (a - b) / n}')
    IDLE_UPSTREAM[$proxy]=$(upstream_connections "$proxy")
    kill "$IDLE_PID" 2>/dev/null || true
    wait "$IDLE_PID" 2>/dev/null || true
    sleep 2

    log "$SLOW_CLIENTS slow uploaders and 64 normal clients on $proxy"
    "$PYTHON" "$work/clients.py" slow "${HTTP_PORT[$proxy]}" "$SLOW_CLIENTS" "$HOST" "$SLOW_SECONDS" &
    slow_pid=$!
    sleep 3
    held=0
    (
        peak=0
        for _ in $(seq 1 $(((SLOW_SECONDS - 4) * 2))); do
            n=$(upstream_connections "$proxy")
            ((n > peak)) && peak=$n
            echo "$peak" >"$work/slow-peak"
            sleep 0.5
        done
    ) &
    sampler=$!
    out=$(wrk -t"$THREADS" -c64 -d"$((SLOW_SECONDS - 6))s" --latency -H "Host: $HOST" \
        "http://127.0.0.1:${HTTP_PORT[$proxy]}/small.html" 2>&1)
    wait "$sampler" 2>/dev/null || true
    held=$(cat "$work/slow-peak" 2>/dev/null || echo 0)
    SLOW_P99[$proxy]=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    SLOW_RPS[$proxy]=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
    SLOW_UPSTREAM[$proxy]=$held
    wait "$slow_pid" 2>/dev/null || true
    sleep 1
done

# --- report ------------------------------------------------------------------------------------
median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
stat() { awk -v s="$1" -v p="$2" -v c="$3" '$1 == s && $2 == p {print $c}' "$work/results" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
errors=$(awk '{n += $6} END {print n + 0}' "$work/results")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
verdict() { # RATIO OP LIMIT
    if awk -v r="$1" -v op="$2" -v l="$3" 'BEGIN { exit !((op == ">=") ? (r >= l) : (r <= l)) }'; then
        echo ok
    else
        echo MISS
    fi
}

{
    printf '\nReverse proxy benchmark — %s rounds × %s per scenario and proxy (medians), wrk -t%s, %s cores, upstream nginx on 127.0.0.1\n' \
        "$ROUNDS" "$DURATION" "$THREADS" "$CORES"
    printf 'load average before %s, after %s\n\n' "$load_before" "$load_after"
    printf '| scenario | nginx req/s | HAProxy req/s | docker-watcher req/s | dw/nginx | dw/HAProxy | p99 nginx | p99 HAProxy | p99 dw (ms) | p99 dw/nginx | budget |\n'
    printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n'
    for name in $SCENARIOS; do
        ng=$(stat "$name" nginx 3) ha=$(stat "$name" haproxy 3) dw=$(stat "$name" docker-watcher 3)
        ng99=$(stat "$name" nginx 5) ha99=$(stat "$name" haproxy 5) dw99=$(stat "$name" docker-watcher 5)
        r_ng=$(ratio "$dw" "$ng") r_ha=$(ratio "$dw" "$ha") r_99=$(ratio "$dw99" "$ng99")
        v1=$(verdict "$r_ng" ">=" 1.0) v2=$(verdict "$r_ha" ">=" 1.0) v3=$(verdict "$r_99" "<=" 1.1)
        budget=ok
        [[ $v1$v2$v3 == okokok ]] || budget="MISS (≥1.0×, ≥1.0×, ≤1.1×)"
        printf '| %s | %.0f | %.0f | %.0f | %s | %s | %.2f | %.2f | %.2f | %s | %s |\n' \
            "$name" "$ng" "$ha" "$dw" "$r_ng" "$r_ha" "$ng99" "$ha99" "$dw99" "$r_99" "$budget"
    done
    printf '\n| %s idle keep-alive clients | nginx | HAProxy | docker-watcher | budget |\n|---|---:|---:|---:|---|\n' "$IDLE_CLIENTS"
    printf '| resident memory per client (KiB) | %s | %s | %s | ≤ 2 KiB: %s |\n' \
        "${IDLE_KIB[nginx]}" "${IDLE_KIB[haproxy]}" "${IDLE_KIB[docker-watcher]}" "$(verdict "${IDLE_KIB[docker-watcher]}" "<=" 2)"
    printf '| upstream connections held | %s | %s | %s | none beyond the pool |\n' \
        "${IDLE_UPSTREAM[nginx]}" "${IDLE_UPSTREAM[haproxy]}" "${IDLE_UPSTREAM[docker-watcher]}"
    printf '\n| %s slow uploaders + 64 normal clients | nginx | HAProxy | docker-watcher | dw/nginx |\n|---|---:|---:|---:|---:|\n' "$SLOW_CLIENTS"
    printf '| normal clients req/s | %s | %s | %s | %s |\n' "${SLOW_RPS[nginx]}" "${SLOW_RPS[haproxy]}" "${SLOW_RPS[docker-watcher]}" \
        "$(ratio "${SLOW_RPS[docker-watcher]}" "${SLOW_RPS[nginx]}")"
    printf '| normal clients p99 (ms) | %s | %s | %s | %s |\n' "${SLOW_P99[nginx]}" "${SLOW_P99[haproxy]}" "${SLOW_P99[docker-watcher]}" \
        "$(ratio "${SLOW_P99[docker-watcher]}" "${SLOW_P99[nginx]}")"
    printf '| upstream connections held (peak) | %s | %s | %s | |\n' "${SLOW_UPSTREAM[nginx]}" "${SLOW_UPSTREAM[haproxy]}" "${SLOW_UPSTREAM[docker-watcher]}"
    printf '\nnon-2xx responses and socket errors across all wrk runs: %s\n' "$errors"
} >"$work/report"
cat "$work/report"
printf 'budget misses: %s\n' "$(grep -c MISS "$work/report" || true)"
