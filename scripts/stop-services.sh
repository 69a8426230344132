#!/usr/bin/env bash
# Stops what scripts/services.sh started — the two registries, the SMTP server and, if it started
# one, dockerd —
# found by the pid files in its state directory. A dockerd or registry started any other way (by
# hand, by systemd) is left alone: this only undoes our own work. For developers; CI never stops.
#
#   scripts/stop-services.sh [--keep-dockerd] [--purge]
#
# --keep-dockerd  stop only the registries (dockerd is slow to restart and holds your containers)
# --purge         also delete the registries' storage, configs and logs (the next start is fresh)
set -euo pipefail

STATE_DIR=${DW_DEV_STATE_DIR:-/var/lib/docker-watcher-dev}
keep_dockerd='' purge=''
for arg in "$@"; do
    case $arg in
    --keep-dockerd) keep_dockerd=1 ;;
    --purge) purge=1 ;;
    *)
        echo "usage: scripts/stop-services.sh [--keep-dockerd] [--purge]" >&2
        exit 2
        ;;
    esac
done

log() { printf 'stop-services: %s\n' "$*" >&2; }

# Stops the process named by pid file $2 if it is alive and its command name is $3 (a pid file
# can outlive its process and the pid be reused), waiting up to $4 seconds before KILL.
stop_one() {
    local label=$1 pid_file=$2 comm=$3 timeout=$4 pid deadline
    if [[ ! -s $pid_file ]]; then
        log "$label: not started by services.sh"
        return
    fi
    pid=$(<"$pid_file")
    if [[ ! $pid =~ ^[0-9]+$ || $(cat "/proc/$pid/comm" 2>/dev/null) != "$comm" ]]; then
        log "$label: not running (stale pid file)"
        rm -f "$pid_file"
        return
    fi
    kill -TERM "$pid"
    deadline=$((SECONDS + timeout))
    while kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; do
        if ((SECONDS >= deadline)); then
            log "$label: still running after ${timeout} s; killing"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$pid_file"
    log "$label: stopped (pid $pid)"
}

stop_one registry "$STATE_DIR/registry.pid" docker-registry 10
stop_one auth-registry "$STATE_DIR/auth-registry.pid" docker-registry 10
stop_one smtp "$STATE_DIR/smtp.pid" python3 10
if [[ -z $keep_dockerd ]]; then
    # dockerd stops its running containers on TERM (10 s each, in parallel) before it exits.
    stop_one dockerd "$STATE_DIR/dockerd.pid" dockerd 60
fi
if [[ -n $purge ]]; then
    rm -rf "$STATE_DIR/registry" "$STATE_DIR/auth-registry" "$STATE_DIR/smtp" "$STATE_DIR"/*.log "$STATE_DIR"/*.log.1
    log "purged registry storage and logs under $STATE_DIR"
fi
