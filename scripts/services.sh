#!/usr/bin/env bash
# Dev and CI services for docker-watcher's tests (SPEC §10): a Docker engine (Debian `docker.io`)
# and two CNCF distribution registries (Debian `docker-registry`) on loopback — an anonymous one on
# 127.0.0.1:5000 and one behind htpasswd basic auth on 127.0.0.1:5001 — and an SMTP server for the
# email notifications (Debian `python3-aiosmtpd`, scripts/smtp-test-server.py) with a STARTTLS
# listener on 127.0.0.1:47025 and an implicit-TLS one on 127.0.0.1:47465, both requiring a login,
# with a test CA of its own, delivering into a maildir. Installs what is missing,
# starts what is not answering, leaves alone what already works, so it is cheap to run before
# every test run.
#
#   scripts/services.sh                # executed: progress on stderr, `export` lines on stdout
#   eval "$(scripts/services.sh)"      # ...so this sets the test environment in your shell
#   . scripts/services.sh              # sourced from bash: same, without touching your shell options
#
# Knobs (environment): DW_DEV_STATE_DIR (default /var/lib/docker-watcher-dev: logs, pid files,
# registry configs and storage), DW_TEST_REGISTRY_PORT (5000), DW_TEST_AUTH_REGISTRY_PORT (5001),
# DW_TEST_SMTP_STARTTLS_PORT (47025), DW_TEST_SMTP_TLS_PORT (47465),
# DW_DOCKERD_FLAGS (extra dockerd flags, e.g. `--storage-driver=vfs` where overlayfs is unavailable).
# The same values are written to $DW_DEV_STATE_DIR/env. scripts/stop-services.sh undoes it.

# Sourced: run the real work as a separate bash process and import its `export` lines. A child
# process keeps `set -euo pipefail` and `exit` away from the caller's shell, and — unlike a
# subshell — its errexit still works when the caller writes `. services.sh || ...`.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    _dw_services_sourced() {
        local exports
        exports=$(bash "${BASH_SOURCE[0]}") || return 1
        eval "$exports"
    }
    _dw_services_sourced || {
        unset -f _dw_services_sourced
        return 1
    }
    unset -f _dw_services_sourced
    return 0
fi

set -euo pipefail

STATE_DIR=${DW_DEV_STATE_DIR:-/var/lib/docker-watcher-dev}
REGISTRY_PORT=${DW_TEST_REGISTRY_PORT:-5000}
AUTH_REGISTRY_PORT=${DW_TEST_AUTH_REGISTRY_PORT:-5001}
AUTH_USER=dwtest
AUTH_PASSWORD=dwtest-secret
SMTP_STARTTLS_PORT=${DW_TEST_SMTP_STARTTLS_PORT:-47025}
SMTP_TLS_PORT=${DW_TEST_SMTP_TLS_PORT:-47465}
SMTP_USER=dwtest
SMTP_PASSWORD=dwtest-smtp-secret
export DEBIAN_FRONTEND=noninteractive
# needrestart (when installed) would otherwise list or even restart services after apt-get.
export NEEDRESTART_SUSPEND=1

# Progress goes to stderr: stdout is reserved for the `export` lines so `eval "$(...)"` works.
log() { printf 'services: %s\n' "$*" >&2; }
die() {
    printf 'services: ERROR: %s\n' "$*" >&2
    exit 1
}

# Prints the last lines of a log file to stderr, to make a failure explain itself.
show_log_tail() {
    if [[ -s $1 ]]; then
        printf -- '--- last lines of %s ---\n' "$1" >&2
        tail -n 30 "$1" >&2
        printf -- '---\n' >&2
    fi
}

# True when process $1 lives and its command name is $2. Checking the name guards against pid
# reuse: pid files outlive reboots and container restarts. A zombie (killed, not yet reaped by
# init) still has its name but is not alive.
process_is_live() {
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZX] ]]
}

# True when pid file $1 names a live process whose command name is $2.
pid_file_is_live() {
    [[ -s $1 ]] && process_is_live "$(<"$1")" "$2"
}

# Stops the process of pid file $1 (command name $3): TERM, then KILL after $2 seconds.
stop_pid_file() {
    local pid deadline
    pid=$(<"$1")
    kill -TERM "$pid" 2>/dev/null || return 0
    deadline=$((SECONDS + $2))
    while process_is_live "$pid" "$3"; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.2
    done
    rm -f "$1"
}

# Starts "$@" detached in its own session (so it outlives this script and a CI step's process
# group), stdout/stderr appended to log $1 (the previous log is kept as $1.1), pid written to $2.
# The pid comes from inside the new process: `$!` would name `setsid`, which may fork.
start_detached() {
    local log_file=$1 pid_file=$2
    shift 2
    [[ -f $log_file ]] && mv -f "$log_file" "$log_file.1"
    # A pid file left by an earlier run (a reboot, a restored machine image) would pass for the
    # new process until that one writes its own.
    rm -f "$pid_file"
    # shellcheck disable=SC2016 # expanded by the inner bash, on purpose.
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pid_file" "$@" >>"$log_file" 2>&1 </dev/null 9>&- &
    # Wait for the pid file, then for the exec: until then the process is still named `bash`,
    # and a caller watching it by name (process_is_live) would take it for one that exited.
    local i pid
    for ((i = 0; i < 50; i++)); do
        [[ -s $pid_file ]] && break
        sleep 0.1
    done
    [[ -s $pid_file ]] || die "could not start $1 (no pid file $pid_file)"
    pid=$(<"$pid_file")
    for ((i = 0; i < 100; i++)); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == bash ]] || return 0
        sleep 0.05
    done
}

# Writes $2 to file $1 (mode $3) only when the content differs; true when it changed.
write_if_changed() {
    if [[ -f $1 ]] && [[ $(<"$1") == "$2" ]]; then
        return 1
    fi
    (umask 077 && printf '%s\n' "$2" >"$1.tmp")
    chmod "$3" "$1.tmp"
    mv -f "$1.tmp" "$1"
}

# --- Debian packages -----------------------------------------------------------------------------

package_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# A package counts as present when dpkg has it, or when the command we need from it exists
# (e.g. Docker installed from docker-ce rather than docker.io: installing docker.io would
# conflict with it). busybox-static is checked by package only: the dynamic `busybox` package
# has the same /usr/bin/busybox, which would not run inside an otherwise empty image.
ensure_packages() {
    local missing=()
    package_installed docker.io || { command -v dockerd && command -v docker; } >/dev/null ||
        missing+=(docker.io)
    package_installed docker-registry || command -v docker-registry >/dev/null ||
        missing+=(docker-registry)
    package_installed busybox-static || missing+=(busybox-static)
    package_installed ca-certificates || missing+=(ca-certificates)
    package_installed curl || command -v curl >/dev/null || missing+=(curl)
    package_installed apache2-utils || command -v htpasswd >/dev/null || missing+=(apache2-utils)
    # The UI's browser tests (tests/it/browser.rs) drive Debian's Chromium through chromedriver.
    package_installed chromium || command -v chromium >/dev/null || missing+=(chromium)
    package_installed chromium-driver || command -v chromedriver >/dev/null || missing+=(chromium-driver)
    # tests/it/systemd.rs checks dist/docker-watcher.service with systemd-analyze.
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    # Email notifications are tested against aiosmtpd, with certificates made by openssl.
    package_installed python3-aiosmtpd || missing+=(python3-aiosmtpd)
    package_installed openssl || command -v openssl >/dev/null || missing+=(openssl)

    if ((${#missing[@]} == 0)); then
        log "packages: all present"
        return
    fi
    log "packages: installing ${missing[*]}"
    # Package maintainer scripts would start the Debian services right away (docker-registry with
    # its own config on *:5000, which then holds our port). A policy-rc.d that exits 101 tells
    # invoke-rc.d "not now"; we start everything ourselves below. Only add one if none exists.
    local policy=/usr/sbin/policy-rc.d own_policy=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# Temporary, from docker-watcher scripts/services.sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    if [[ -n $own_policy ]]; then
        rm -f "$policy"
        trap - EXIT
    fi
}

# --- Docker engine -------------------------------------------------------------------------------

docker_answers() { docker info >/dev/null 2>&1; }

ensure_dockerd() {
    local log_file=$STATE_DIR/dockerd.log pid_file=$STATE_DIR/dockerd.pid
    if docker_answers; then
        log "dockerd: already running ($(docker version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}' 2>/dev/null))"
        return
    fi
    # A DOCKER_HOST pointing elsewhere is the developer's engine: starting a local dockerd would
    # not make it answer.
    if [[ -n ${DOCKER_HOST:-} && $DOCKER_HOST != unix:///var/run/docker.sock && $DOCKER_HOST != unix:///run/docker.sock ]]; then
        die "DOCKER_HOST=$DOCKER_HOST does not answer \`docker info\`; not starting a local dockerd"
    fi

    local system_pid_file=/var/run/docker.pid starting=
    if pid_file_is_live "$system_pid_file" dockerd; then
        # Alive but not answering yet: most likely still starting (or shutting down). Wait.
        log "dockerd: pid $(<"$system_pid_file") exists but does not answer yet; waiting"
        starting=1
    elif [[ -e $system_pid_file ]]; then
        # dockerd refuses to start while its pid file exists, even when the pid is long gone
        # (a killed daemon, a restarted container).
        log "dockerd: removing stale $system_pid_file"
        rm -f "$system_pid_file"
    fi
    if [[ -z $starting ]]; then
        # shellcheck disable=SC2086 # DW_DOCKERD_FLAGS is a list of flags, split on purpose.
        start_detached "$log_file" "$pid_file" dockerd ${DW_DOCKERD_FLAGS:-}
        log "dockerd: started (pid $(<"$pid_file"), log $log_file)"
    fi

    local deadline=$((SECONDS + 60))
    until docker_answers; do
        if [[ -z $starting ]] && ! pid_file_is_live "$pid_file" dockerd; then
            show_log_tail "$log_file"
            die "dockerd exited during start-up"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$log_file"
            die "dockerd does not answer \`docker info\` after 60 s"
        fi
        sleep 0.5
    done
    log "dockerd: ready ($(docker version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}' 2>/dev/null))"
}

# --- Registries ----------------------------------------------------------------------------------

# HTTP status of GET /v2/ on 127.0.0.1:$1 (with credentials $2 if given); 000 when nothing answers.
registry_status() {
    local auth=()
    [[ -n ${2:-} ]] && auth=(-u "$2")
    curl -s -o /dev/null -w '%{http_code}' --max-time 3 "${auth[@]}" "http://127.0.0.1:$1/v2/" || true
}

# Whether the registry on $1 behaves as wanted: anonymous 200, or — with credentials $2 — 401
# without them and 200 with them (so an open registry cannot pass for the auth one).
registry_ok() {
    if [[ -z ${2:-} ]]; then
        [[ $(registry_status "$1") == 200 ]]
    else
        [[ $(registry_status "$1") == 401 && $(registry_status "$1" "$2") == 200 ]]
    fi
}

port_in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# One random secret shared by both registries, kept across runs. The registry signs upload state
# with it; without one it makes up a new one at each start and warns about it.
http_secret() {
    local file=$STATE_DIR/registry-http-secret
    if [[ ! -s $file ]]; then
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$file")
    fi
    cat "$file"
}

# The config of registry $1 on port $2; extra YAML (auth) in $3. Format version 0.1 is the only
# one distribution 2.x knows. No `storage.cache.blobdescriptor: inmemory` (the Debian default):
# with deletes enabled that cache can keep answering for deleted blobs, and tests delete.
registry_config() {
    cat <<EOF
# Generated by docker-watcher scripts/services.sh; edits are overwritten.
version: 0.1
log:
  level: warn
  accesslog:
    # One line per request swamps the log during polling benchmarks; errors still get logged.
    disabled: true
storage:
  filesystem:
    rootdirectory: $STATE_DIR/$1/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$2
  secret: $(http_secret)
  headers:
    X-Content-Type-Options: [nosniff]
$3
EOF
}

# The Debian package's own service (/etc/init.d/docker-registry, Debian config, *:5000) may have
# been started by someone; it holds our port. Stop it, saying so. Under systemd, ask the human.
stop_debian_registry_service() {
    if pid_file_is_live /var/run/docker-registry.pid docker-registry; then
        log "registry: stopping the Debian docker-registry service, which holds port $1"
        start-stop-daemon --stop --quiet --retry 10 --pidfile /var/run/docker-registry.pid || true
        return 0
    fi
    if [[ -d /run/systemd/system ]] && systemctl -q is-active docker-registry 2>/dev/null; then
        die "the Debian docker-registry service holds port $1; run: systemctl disable --now docker-registry"
    fi
    return 1
}

# Ensures registry $1 (state subdirectory and label) answers on 127.0.0.1:$2 with config $3;
# $4 = user:password when it must require basic auth; $5 non-empty when the config changed.
ensure_registry() {
    local name=$1 port=$2 config=$3 credentials=${4:-} changed=${5:-}
    local pid_file=$STATE_DIR/$name.pid log_file=$STATE_DIR/$name.log

    if registry_ok "$port" "$credentials"; then
        if [[ -n $changed ]] && pid_file_is_live "$pid_file" docker-registry; then
            log "$name: config changed; restarting"
            stop_pid_file "$pid_file" 10 docker-registry
        else
            log "$name: already answering on 127.0.0.1:$port"
            return
        fi
    elif pid_file_is_live "$pid_file" docker-registry; then
        log "$name: pid $(<"$pid_file") does not answer as expected; restarting"
        stop_pid_file "$pid_file" 10 docker-registry
    fi

    if port_in_use "$port"; then
        stop_debian_registry_service "$port" || {
            command -v ss >/dev/null && ss -ltnp "sport = :$port" >&2
            die "port 127.0.0.1:$port is taken by something that is not our $name (GET /v2/ -> $(registry_status "$port")); free it or set the port variable"
        }
    fi

    start_detached "$log_file" "$pid_file" docker-registry serve "$config"
    local deadline=$((SECONDS + 30))
    until registry_ok "$port" "$credentials"; do
        if ! pid_file_is_live "$pid_file" docker-registry; then
            show_log_tail "$log_file"
            die "$name exited during start-up"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$log_file"
            die "$name does not answer on 127.0.0.1:$port after 30 s"
        fi
        sleep 0.2
    done
    log "$name: started on 127.0.0.1:$port (pid $(<"$pid_file"), log $log_file)"
}

ensure_registries() {
    local dir changed

    dir=$STATE_DIR/registry
    mkdir -p "$dir/storage"
    changed=
    write_if_changed "$dir/config.yml" "$(registry_config registry "$REGISTRY_PORT" "")" 644 &&
        changed=1
    ensure_registry registry "$REGISTRY_PORT" "$dir/config.yml" "" "$changed"

    dir=$STATE_DIR/auth-registry
    mkdir -p "$dir/storage"
    changed=
    # bcrypt (-B) is the only hash distribution's htpasswd reader accepts. A new hash has a new
    # salt, so regenerate only when the password no longer verifies; distribution 2.8 reads the
    # file once at start, hence the restart when it changes.
    if ! htpasswd -vb "$dir/htpasswd" "$AUTH_USER" "$AUTH_PASSWORD" >/dev/null 2>&1; then
        (umask 077 && htpasswd -Bbn "$AUTH_USER" "$AUTH_PASSWORD" >"$dir/htpasswd")
        changed=1
    fi
    local auth_yaml="auth:
  htpasswd:
    realm: docker-watcher-test
    path: $dir/htpasswd"
    write_if_changed "$dir/config.yml" "$(registry_config auth-registry "$AUTH_REGISTRY_PORT" "$auth_yaml")" 644 &&
        changed=1
    ensure_registry auth-registry "$AUTH_REGISTRY_PORT" "$dir/config.yml" "$AUTH_USER:$AUTH_PASSWORD" "$changed"
}

# --- SMTP server ---------------------------------------------------------------------------------

# Whether something answers SMTP (a 220 greeting) on 127.0.0.1:$1; with $2, over TLS.
smtp_answers() {
    local greeting
    if [[ -n ${2:-} ]]; then
        greeting=$(timeout 5 openssl s_client -connect "127.0.0.1:$1" -quiet </dev/null 2>/dev/null) || true
    else
        greeting=$(timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$1"'; head -c 3 <&3' 2>/dev/null) || true
    fi
    [[ $greeting == 220* ]]
}

# A CA of the tests' own and a certificate for 127.0.0.1 / localhost signed by it, made once.
smtp_certificates() {
    local dir=$1
    [[ -s $dir/ca.pem && -s $dir/server.pem && -s $dir/server.key ]] && return 0
    log "smtp: making a test CA and a server certificate in $dir"
    (
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=docker-watcher test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
            -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
        openssl x509 -req -days 3650 -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
            -CAcreateserial -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
    ) || die "smtp: could not make the test certificates"
    chmod 644 "$dir/ca.pem"
}

ensure_smtp() {
    local dir=$STATE_DIR/smtp pid_file=$STATE_DIR/smtp.pid log_file=$STATE_DIR/smtp.log
    mkdir -p "$dir/maildir/new" "$dir/maildir/cur" "$dir/maildir/tmp"
    smtp_certificates "$dir"
    # Mails of earlier runs are of no use to anyone.
    find "$dir/maildir" -type f -mmin +1440 -delete 2>/dev/null || true
    if pid_file_is_live "$pid_file" python3 && smtp_answers "$SMTP_STARTTLS_PORT" && smtp_answers "$SMTP_TLS_PORT" tls; then
        log "smtp: already answering on 127.0.0.1:$SMTP_STARTTLS_PORT (STARTTLS) and :$SMTP_TLS_PORT (TLS)"
        return
    fi
    pid_file_is_live "$pid_file" python3 && stop_pid_file "$pid_file" 10 python3
    local port
    for port in "$SMTP_STARTTLS_PORT" "$SMTP_TLS_PORT"; do
        port_in_use "$port" && die "port 127.0.0.1:$port is taken by something that is not our SMTP server; free it or set DW_TEST_SMTP_*_PORT"
    done
    start_detached "$log_file" "$pid_file" /usr/bin/python3 "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/smtp-test-server.py" \
        "$dir/maildir" "$dir/server.pem" "$dir/server.key" "$SMTP_STARTTLS_PORT" "$SMTP_TLS_PORT" "$SMTP_USER" "$SMTP_PASSWORD"
    local deadline=$((SECONDS + 20))
    until smtp_answers "$SMTP_STARTTLS_PORT" && smtp_answers "$SMTP_TLS_PORT" tls; do
        if ! pid_file_is_live "$pid_file" python3; then
            show_log_tail "$log_file"
            die "the SMTP server exited during start-up"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$log_file"
            die "the SMTP server does not answer after 20 s"
        fi
        sleep 0.2
    done
    log "smtp: started on 127.0.0.1:$SMTP_STARTTLS_PORT (STARTTLS) and :$SMTP_TLS_PORT (TLS) (pid $(<"$pid_file"), log $log_file)"
}

# --- Environment for the tests -------------------------------------------------------------------

write_env() {
    local env
    env=$(
        printf 'export DW_TEST_REGISTRY=%q\n' "127.0.0.1:$REGISTRY_PORT"
        printf 'export DW_TEST_AUTH_REGISTRY=%q\n' "127.0.0.1:$AUTH_REGISTRY_PORT"
        printf 'export DW_TEST_AUTH_REGISTRY_USER=%q\n' "$AUTH_USER"
        printf 'export DW_TEST_AUTH_REGISTRY_PASSWORD=%q\n' "$AUTH_PASSWORD"
        printf 'export DW_TEST_SMTP_DIR=%q\n' "$STATE_DIR/smtp"
        printf 'export DW_TEST_SMTP_STARTTLS=%q\n' "127.0.0.1:$SMTP_STARTTLS_PORT"
        printf 'export DW_TEST_SMTP_TLS=%q\n' "127.0.0.1:$SMTP_TLS_PORT"
        printf 'export DW_TEST_SMTP_USER=%q\n' "$SMTP_USER"
        printf 'export DW_TEST_SMTP_PASSWORD=%q\n' "$SMTP_PASSWORD"
    )
    write_if_changed "$STATE_DIR/env" "$env" 644 || true
    printf '%s\n' "$env"
}

main() {
    [[ $(id -u) == 0 ]] || die "needs root (installs packages, runs dockerd)"
    local port
    for port in "$REGISTRY_PORT" "$AUTH_REGISTRY_PORT"; do
        if [[ ! $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
            die "not a TCP port: $port"
        fi
    done
    [[ $REGISTRY_PORT != "$AUTH_REGISTRY_PORT" ]] || die "the two registries need two ports"
    mkdir -p "$STATE_DIR"
    # Two test runs starting at once on a cold machine would both start registries on one port.
    # fd 9 is closed in everything start_detached starts, or a daemon would hold the lock forever.
    exec 9>"$STATE_DIR/lock"
    flock -w 600 9 || die "another services.sh holds $STATE_DIR/lock"
    ensure_packages
    ensure_dockerd
    ensure_registries
    ensure_smtp
    write_env
}

main "$@"
