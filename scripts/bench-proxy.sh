#!/usr/bin/env bash
# Reverse-proxy benchmark (SPEC.md §9): the same upstream on 127.0.0.1 — nginx serving a small
# static file — behind docker-watcher's proxy (the real release binary, with a standalone proxy
# route created through the API) and behind nginx as a reverse proxy with a comparable config
# (upstream keep-alive 64, HTTP/1.1 upstream, X-Forwarded-* set, access log off). The same wrk
# load runs on each, alternating, in one run; it prints requests/s and p50/p99 latency of both,
# the ratios against the budgets (throughput ≥ 0.9× nginx, goal ≥ 1.0×; p99 ≤ 1.25×), and
# docker-watcher's resident memory under load.
#
#   scripts/bench-proxy.sh                       # 5 rounds of 10 s per proxy (medians)
#   ROUNDS=3 DURATION=20s CONNECTIONS=64 THREADS=2 scripts/bench-proxy.sh
#
# Installs Debian's nginx and wrk when missing. All traffic stays on 127.0.0.1 (ports 18181-18184
# by default, BENCH_PORT_BASE to move them). Everything it starts is stopped when it exits. On a
# 2-core machine wrk, the upstream and the proxy share the cores: compare the ratios, not the
# absolute numbers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
BASE=${BENCH_PORT_BASE:-18181}
UPSTREAM_PORT=$BASE NGINX_PROXY_PORT=$((BASE + 1)) DW_API_PORT=$((BASE + 2)) DW_PROXY_PORT=$((BASE + 3))
HOST=bench.example.test
PASSWORD=bench-admin-password
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/docker-watcher-target}

log() { printf 'bench-proxy: %s\n' "$*" >&2; }
die() {
    printf 'bench-proxy: ERROR: %s\n' "$*" >&2
    exit 1
}

# --- tools -----------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

log "building the release binary"
cargo build --release --locked --bin docker-watcher >&2
DW="$CARGO_TARGET_DIR/release/docker-watcher"

work=$(mktemp -d)
# nginx workers run as an unprivileged user: they must be able to read the static file.
chmod 755 "$work"
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

wait_for() { # URL [HOST]
    for _ in $(seq 1 100); do
        if curl -fsS -o /dev/null ${2:+-H "Host: $2"} "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$1 did not answer"
}

# --- the upstream: nginx serving a small static file -------------------------------------------
mkdir -p -m 755 "$work/www" "$work/upstream" "$work/nginx-proxy"
head -c 612 /dev/zero | tr '\0' 'x' >"$work/www/index.html"
common_main="daemon off; master_process on; error_log stderr warn;"
cat >"$work/upstream/nginx.conf" <<EOF
$common_main
worker_processes 1;
pid $work/upstream/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/upstream; proxy_temp_path $work/upstream;
    fastcgi_temp_path $work/upstream; uwsgi_temp_path $work/upstream; scgi_temp_path $work/upstream;
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        location / { root $work/www; }
    }
}
EOF
"$NGINX" -p "$work/upstream" -c "$work/upstream/nginx.conf" 2>"$work/upstream.log" &
pids+=($!)

# --- nginx as a reverse proxy, configured like docker-watcher's proxy -----------------------------
cat >"$work/nginx-proxy/nginx.conf" <<EOF
$common_main
worker_processes auto;
pid $work/nginx-proxy/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx-proxy; proxy_temp_path $work/nginx-proxy;
    fastcgi_temp_path $work/nginx-proxy; uwsgi_temp_path $work/nginx-proxy; scgi_temp_path $work/nginx-proxy;
    keepalive_requests 100000;
    upstream backend {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PROXY_PORT;
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
"$NGINX" -p "$work/nginx-proxy" -c "$work/nginx-proxy/nginx.conf" 2>"$work/nginx-proxy.log" &
nginx_proxy_pid=$!
pids+=($nginx_proxy_pid)

# --- docker-watcher, with a standalone proxy to the upstream created through the API -----------
DOCKER_WATCHER_CONFIG=/dev/null \
    DOCKER_WATCHER_DATA_DIR="$work/dw" \
    DOCKER_WATCHER_LISTEN="127.0.0.1:$DW_API_PORT" \
    DOCKER_WATCHER_PROXY_LISTEN="127.0.0.1:$DW_PROXY_PORT" \
    DOCKER_WATCHER_ADMIN_PASSWORD=$PASSWORD \
    DOCKER_WATCHER_LOG=warn \
    "$DW" serve >"$work/dw.log" 2>&1 &
dw_pid=$!
pids+=($dw_pid)

wait_for "http://127.0.0.1:$UPSTREAM_PORT/index.html"
wait_for "http://127.0.0.1:$DW_API_PORT/healthz"
api="http://127.0.0.1:$DW_API_PORT"
csrf=$(curl -fsS -c "$work/cookies" -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" "$api/api/auth/login" | jq -r .csrf_token)
curl -fsS -b "$work/cookies" -H "X-CSRF-Token: $csrf" -H 'content-type: application/json' \
    -d "{\"name\":\"bench\",\"hostname\":\"$HOST\",\"target_url\":\"http://127.0.0.1:$UPSTREAM_PORT/\"}" \
    "$api/api/proxies" >/dev/null
wait_for "http://127.0.0.1:$DW_PROXY_PORT/index.html" "$HOST"
wait_for "http://127.0.0.1:$NGINX_PROXY_PORT/index.html" "$HOST"

# --- load --------------------------------------------------------------------------------------
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
to_ms() { # wrk latency like 1.23ms, 850.00us, 1.02s
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { printf "%s", v } }'
}

# CPU time (user and system, in clock ticks) of the given processes so far.
cpu_ticks() {
    local user=0 system=0 u s
    for pid in "$@"; do
        read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat" 2>/dev/null || echo "0 0")
        user=$((user + u)) system=$((system + s))
    done
    echo "$user $system"
}

# run NAME PORT PID...: one wrk run against PORT, measuring the CPU the PIDs use; appends
# "NAME rps p50 p99 errors user_us_per_request system_us_per_request" to $work/results.
run() {
    local name=$1 port=$2 out u0 s0 u1 s1
    shift 2
    read -r u0 s0 < <(cpu_ticks "$@")
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $HOST" \
        "http://127.0.0.1:$port/index.html")
    read -r u1 s1 < <(cpu_ticks "$@")
    local rps p50 p99 errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errors=$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {n += 1} END {print n + 0}' <<<"$out")
    local requests hz user_us system_us
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    hz=$(getconf CLK_TCK)
    user_us=$(awk -v t=$((u1 - u0)) -v n="$requests" -v hz="$hz" 'BEGIN {printf "%.2f", n ? t * 1e6 / hz / n : 0}')
    system_us=$(awk -v t=$((s1 - s0)) -v n="$requests" -v hz="$hz" 'BEGIN {printf "%.2f", n ? t * 1e6 / hz / n : 0}')
    printf '%s %s %s %s %s %s %s\n' "$name" "$rps" "$p50" "$p99" "$errors" "$user_us" "$system_us" >>"$work/results"
    printf '  %-15s %10s req/s   p50 %8s ms   p99 %8s ms   errors %s   CPU/request %s µs user + %s µs sys\n' \
        "$name" "$rps" "$p50" "$p99" "$errors" "$user_us" "$system_us" >&2
}

# Other work on the machine skews both proxies alike, but makes the ratios noisier: say so.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "warming up (3 s each); load average before: $load_before"
wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -H "Host: $HOST" "http://127.0.0.1:$NGINX_PROXY_PORT/index.html" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -H "Host: $HOST" "http://127.0.0.1:$DW_PROXY_PORT/index.html" >/dev/null

log "measuring: $ROUNDS rounds of wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency on each proxy"
: >"$work/results"
peak_rss=0
for round in $(seq 1 "$ROUNDS"); do
    log "round $round"
    # shellcheck disable=SC2046 # one PID per word
    run nginx "$NGINX_PROXY_PORT" $(pgrep -P "$nginx_proxy_pid")
    # Sample docker-watcher's memory while it is under load.
    (
        peak=0
        while kill -0 "$dw_pid" 2>/dev/null && [[ ! -e "$work/stop-sampling" ]]; do
            rss=$(rss_kib "$dw_pid")
            ((rss > peak)) && peak=$rss
            echo "$peak" >"$work/peak-rss"
            sleep 0.2
        done
    ) &
    sampler=$!
    run docker-watcher "$DW_PROXY_PORT" "$dw_pid"
    touch "$work/stop-sampling"
    wait "$sampler" 2>/dev/null || true
    rm -f "$work/stop-sampling"
    round_peak=$(cat "$work/peak-rss" 2>/dev/null || echo 0)
    ((round_peak > peak_rss)) && peak_rss=$round_peak
done
idle_rss=$(rss_kib "$dw_pid")

# --- report: the median of the rounds for each proxy ------------------------------------------
median() { sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
stat() { awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$work/results" | median; }
ng_rps=$(stat nginx 2) ng_p50=$(stat nginx 3) ng_p99=$(stat nginx 4)
dw_rps=$(stat docker-watcher 2) dw_p50=$(stat docker-watcher 3) dw_p99=$(stat docker-watcher 4)
ng_user=$(stat nginx 6) ng_sys=$(stat nginx 7) dw_user=$(stat docker-watcher 6) dw_sys=$(stat docker-watcher 7)
errors=$(awk '{n += $5} END {print n + 0}' "$work/results")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
rps_ratio=$(ratio "$dw_rps" "$ng_rps")
p50_ratio=$(ratio "$dw_p50" "$ng_p50")
p99_ratio=$(ratio "$dw_p99" "$ng_p99")
verdict() { awk -v r="$1" -v op="$2" -v limit="$3" 'BEGIN {
    ok = (op == ">=") ? (r >= limit) : (r <= limit); print ok ? "within budget" : "OVER BUDGET" }'; }

cat <<EOF

Reverse proxy benchmark — wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS rounds (medians), upstream nginx on 127.0.0.1
                      requests/s      p50 (ms)      p99 (ms)   CPU µs/request (user + sys)
  nginx               $(printf '%10.0f    %10.3f    %10.3f    %6.2f + %.2f' "$ng_rps" "$ng_p50" "$ng_p99" "$ng_user" "$ng_sys")
  docker-watcher      $(printf '%10.0f    %10.3f    %10.3f    %6.2f + %.2f' "$dw_rps" "$dw_p50" "$dw_p99" "$dw_user" "$dw_sys")
  ratio (dw / nginx)  $(printf '%10s    %10s    %10s' "$rps_ratio" "$p50_ratio" "$p99_ratio")

  throughput  ${rps_ratio}× nginx   (budget ≥ 0.9×, goal ≥ 1.0×): $(verdict "$rps_ratio" ">=" 0.9)
  p99 latency ${p99_ratio}× nginx   (budget ≤ 1.25×): $(verdict "$p99_ratio" "<=" 1.25)
  docker-watcher resident memory: $((peak_rss / 1024)) MiB peak under load, $((idle_rss / 1024)) MiB after it
  non-2xx responses and socket errors across all runs: $errors
  load average before the run: $load_before (other work on the machine makes the ratios noisier)
EOF
