#!/usr/bin/env bash
# Builds a tiny test image without any public registry and pushes it: the rootfs is the static
# busybox from Debian's busybox-static plus a few applet symlinks and files, turned into an image
# by `docker import` (SPEC §10). For manual testing and benchmarks; integration tests may build
# their images in Rust the same way. Needs dockerd and the registry (scripts/services.sh).
#
#   scripts/test-image.sh REGISTRY/REPO:TAG [--variant web|exit1|health500|app] [--marker TEXT]
#
# Variants (all expose 8080):
#   web        busybox httpd on :8080; / and /health answer 200 with the marker text
#   exit1      exits at once with status 1 (a deploy whose container never stays up)
#   health500  / answers 200 with the marker, /health answers 500 (a failing health gate)
#   app        web, plus what a stateful application does, through busybox httpd's CGI:
#              /cgi-bin/env?NAME     the value of the environment variable NAME
#              /cgi-bin/file?/PATH   the content of the file /PATH (a volume's, say)
#              /cgi-bin/fetch?HOST:PORT/PATH   what http://HOST:PORT/PATH answers (an accessory)
#              At start, when $APP_WRITE names a file, the marker is appended to it (a version
#              writing to its volume); when $APP_PRINT_ENV is set, the environment is printed to
#              the log.
# The marker (default: the image name and the current time) lands in the image's files, so two
# pushes of one tag get different digests and a response tells which build is serving.
# Prints the pushed reference by digest, REGISTRY/REPO@sha256:..., on stdout.
set -euo pipefail

log() { printf 'test-image: %s\n' "$*" >&2; }
die() {
    printf 'test-image: ERROR: %s\n' "$*" >&2
    exit 1
}
usage() {
    echo "usage: scripts/test-image.sh REGISTRY/REPO:TAG [--variant web|exit1|health500|app] [--marker TEXT]" >&2
    exit 2
}

image='' variant=web marker=''
while (($#)); do
    case $1 in
    --variant) variant=${2:?--variant needs a value}; shift 2 ;;
    --variant=*) variant=${1#*=}; shift ;;
    --marker) marker=${2?--marker needs a value}; shift 2 ;;
    --marker=*) marker=${1#*=}; shift ;;
    -h | --help) usage ;;
    -*) die "unknown option $1" ;;
    *) [[ -z $image ]] || usage; image=$1; shift ;;
    esac
done
[[ -n $image ]] || usage
# An explicit tag keeps `docker push` from pushing every local tag of the repository.
[[ ${image##*/} == *:* && $image == */* ]] || die "want REGISTRY/REPO:TAG, got $image"
case $variant in web | exit1 | health500 | app) ;; *) die "unknown variant $variant" ;; esac
[[ -n $marker ]] || marker="$image built $(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"
[[ $marker != *$'\n'* ]] || die "the marker must be one line"

# The image has no libc: only a statically linked busybox runs in it. The `busybox` package
# installs a dynamic one at the same path.
busybox=/usr/bin/busybox
[[ -x $busybox ]] || die "$busybox missing: run scripts/services.sh (installs busybox-static)"
if [[ $(LC_ALL=C ldd "$busybox" 2>&1 || true) != *"not a dynamic executable"* ]]; then
    die "$busybox is dynamically linked: install busybox-static"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/www" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
# busybox picks the applet from argv[0], so a symlink per command is all an applet needs.
for applet in sh httpd sleep echo cat env wget nc printf mkdir ls rm true false date; do
    ln -s busybox "$root/bin/$applet"
done
printf '%s\n' "$marker" >"$root/www/index.html"

# Busybox sh as PID 1 with a TERM trap: PID 1 ignores signals it has no handler for, so a bare
# httpd would make every `docker stop` wait out its 10 s timeout before the KILL.
# (Written JSON-escaped: it goes into the CMD array below.)
serve_until_term='trap \"exit 0\" TERM INT; \"$@\" & wait'
case $variant in
web)
    printf '%s\n' "$marker" >"$root/www/health"
    cmd='["/bin/sh", "-c", "'$serve_until_term'", "sh", "/bin/httpd", "-f", "-p", "8080", "-h", "/www"]'
    ;;
exit1)
    cmd='["/bin/sh", "-c", "echo \"exiting with status 1\" >&2; exit 1"]'
    ;;
app)
    printf '%s\n' "$marker" >"$root/www/health"
    printf '%s\n' "$marker" >"$root/marker"
    mkdir -p "$root/www/cgi-bin"
    # CGI scripts get the container's environment (busybox httpd passes it on) and the query
    # in $QUERY_STRING.
    cat >"$root/www/cgi-bin/env" <<'SCRIPT'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
case $QUERY_STRING in
'' | [0-9]* | *[!A-Za-z0-9_]*) echo "bad variable name"; exit 0 ;;
esac
eval "printf '%s' \"\${$QUERY_STRING-}\""
SCRIPT
    cat >"$root/www/cgi-bin/file" <<'SCRIPT'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
cat "$QUERY_STRING" 2>&1
SCRIPT
    cat >"$root/www/cgi-bin/fetch" <<'SCRIPT'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
wget -q -O - "http://$QUERY_STRING" 2>&1 || echo "fetch failed"
SCRIPT
    cat >"$root/bin/app-start" <<'SCRIPT'
#!/bin/sh
# The app variant's entry point: write the marker where asked, then serve until TERM.
if [ -n "$APP_WRITE" ]; then
    mkdir -p "${APP_WRITE%/*}"
    cat /marker >>"$APP_WRITE"
fi
[ -z "$APP_PRINT_ENV" ] || env
trap "exit 0" TERM INT
/bin/httpd -f -p 8080 -h /www &
wait
SCRIPT
    chmod 755 "$root/www/cgi-bin/env" "$root/www/cgi-bin/file" "$root/www/cgi-bin/fetch" "$root/bin/app-start"
    cmd='["/bin/app-start"]'
    ;;
health500)
    # busybox httpd runs CGI only under /cgi-bin/, so it cannot answer 500 on /health itself.
    # `nc -ll -e` runs a tiny shell handler per connection instead, which can.
    printf '%s\n' "unhealthy: $marker" >"$root/www/health500"
    cat >"$root/bin/serve-health500" <<'EOF'
#!/bin/sh
# One HTTP request per run, on stdin/stdout (started by `nc -ll -e`): /health is 500, the rest 200.
read -r method path version
# Read the headers up to the blank line: closing with unread input makes the kernel send a reset,
# which can destroy the response before the client reads it.
cr=$(printf '\r')
while read -r line && [ "${line%"$cr"}" != "" ]; do :; done
case $path in
/health | /health\?*) status="500 Internal Server Error" body=/www/health500 ;;
*) status="200 OK" body=/www/index.html ;;
esac
printf 'HTTP/1.0 %s\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n' "$status"
[ "$method" = HEAD ] || cat "$body"
EOF
    chmod 755 "$root/bin/serve-health500"
    cmd='["/bin/sh", "-c", "'$serve_until_term'", "sh", "/bin/nc", "-ll", "-p", "8080", "-e", "/bin/serve-health500"]'
    ;;
esac

# Files owned by root whoever runs this. Real mtimes on purpose: busybox httpd's ETag is
# "mtime-size", and two builds whose markers have the same length must not share one.
tar -C "$root" --sort=name --owner=0 --group=0 --numeric-owner -cf "$work/rootfs.tar" .
log "importing $image (variant $variant, marker: $marker)"
docker import -c "CMD $cmd" -c 'EXPOSE 8080' -c 'ENV PATH=/bin' \
    "$work/rootfs.tar" "$image" >/dev/null

log "pushing $image"
push_output=$(docker push "$image" 2>&1) || {
    printf '%s\n' "$push_output" >&2
    die "push failed (is the registry up? scripts/services.sh; the auth registry needs 'docker login' first)"
}
# The last line reads "TAG: digest: sha256:... size: N".
digest=$(grep -o 'digest: sha256:[0-9a-f]\{64\}' <<<"$push_output" | tail -n 1 | cut -d' ' -f2)
[[ -n $digest ]] || {
    printf '%s\n' "$push_output" >&2
    die "no digest in the push output"
}
printf '%s@%s\n' "${image%:*}" "$digest"
