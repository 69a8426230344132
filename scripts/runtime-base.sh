#!/usr/bin/env bash
# Makes the Debian base image the container image's runtime stage is built FROM in the tests
# (Dockerfile `RUNTIME_BASE`), without any public registry: mmdebstrap (a Debian package) builds
# a minimal bookworm root file system with CA certificates from the machine's own apt sources,
# and `docker import` turns it into an image. The image is tagged with a hash of this script
# and the architecture, so it is built once per machine (and again only when this recipe
# changes); later runs find it and return at once. Needs root and dockerd (scripts/services.sh).
#
#   scripts/runtime-base.sh        # prints the image name, e.g. docker-watcher-base:3f2a…
set -euo pipefail

log() { printf 'runtime-base: %s\n' "$*" >&2; }
die() {
    printf 'runtime-base: ERROR: %s\n' "$*" >&2
    exit 1
}

SUITE=bookworm
PACKAGES=ca-certificates
arch=$(dpkg --print-architecture)
hash=$( (cat "${BASH_SOURCE[0]}"; echo "$arch") | sha256sum | cut -c1-16)
image=docker-watcher-base:$hash

if docker image inspect "$image" >/dev/null 2>&1; then
    log "$image is there"
    printf '%s\n' "$image"
    exit 0
fi

# Two test runs on a cold machine must not both build it.
state=${DW_DEV_STATE_DIR:-/var/lib/docker-watcher-dev}
mkdir -p "$state"
exec 9>"$state/runtime-base.lock"
flock -w 900 9 || die "another runtime-base.sh holds $state/runtime-base.lock"
if docker image inspect "$image" >/dev/null 2>&1; then
    printf '%s\n' "$image"
    exit 0
fi

if ! command -v mmdebstrap >/dev/null; then
    log "installing mmdebstrap"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends mmdebstrap >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$SECONDS
log "building $image: Debian $SUITE minbase + $PACKAGES"
# minbase: essential packages plus apt, with `passwd` for the Dockerfile's useradd. No mirror
# argument: mmdebstrap uses this machine's apt sources. Documentation and apt lists are left
# out of the image.
mmdebstrap --quiet --mode=root --variant=minbase --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    "$SUITE" "$work/rootfs.tar" >&2 || die "mmdebstrap failed"
docker import --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$work/rootfs.tar" "$image" >/dev/null
log "built $image in $((SECONDS - started)) s ($(docker image inspect --format '{{.Size}}' "$image") bytes)"
printf '%s\n' "$image"
