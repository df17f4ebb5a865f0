#!/usr/bin/env bash
# Build the Prometheus image of the compose file's `monitoring` profile without registry
# access, the way build_images.sh builds the node image:
#
#   1. base: the node image's base (python:3.11-slim, Debian bookworm): present, pulled, or
#      the debootstrap stand-in (`build_images.sh --base-only`).
#   2. debs: Debian's `prometheus` package and everything it depends on (Depends and
#      Pre-Depends, recursively), downloaded on the host with `apt-get download` from the
#      host's apt sources, plus a Packages index: a flat file repository. Reused while the
#      candidate version of `prometheus` is the same.
#   3. docker build --network none -f Dockerfile.prometheus over that folder: apt installs
#      `prometheus` from it (what the base already has stays as it is).
#   4. smoke check: `prometheus --version`, and `promtool check config` on this repository's
#      prometheus/docker.yml and rules.yml inside the image.
#
# Usage: scripts/image/build_prometheus_image.sh [--refresh-debs] [--no-cache]
# Environment: SHARDNET_PROMETHEUS_IMAGE (shardnet-prometheus:latest), SHARDNET_BASE_IMAGE
#   (python:3.11-slim), SHARDNET_CACHE_DIR (~/.cache/shardnet).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

IMAGE=${SHARDNET_PROMETHEUS_IMAGE:-shardnet-prometheus:latest}
BASE_IMAGE=${SHARDNET_BASE_IMAGE:-python:3.11-slim}
CACHE_DIR=${SHARDNET_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shardnet}
DEBS=$CACHE_DIR/prometheus-debs

refresh_debs=0
build_cache=()
for arg in "$@"; do
    case $arg in
        --refresh-debs) refresh_debs=1 ;;
        --no-cache) build_cache=(--no-cache) ;;
        -h|--help) sed -n '2,19p' "$ROOT/scripts/image/build_prometheus_image.sh" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build_prometheus_image.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'build_prometheus_image.sh: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/image/debs.sh
. "$ROOT/scripts/image/debs.sh"

docker info >/dev/null 2>&1 || die "docker info failed: is the Docker engine running?"
if ! docker buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=0; fi
command -v apt-get >/dev/null || die "apt-get not found: the .deb files come from the host's apt"

# --- 1. base ---------------------------------------------------------------------------
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE missing: build_images.sh --base-only"
    SHARDNET_BASE_IMAGE=$BASE_IMAGE bash "$ROOT/scripts/image/build_images.sh" --base-only
fi

# --- 2. the .deb files -----------------------------------------------------------------
version=$(apt-cache policy prometheus | awk '/Candidate:/ { print $2 }')
[ -n "$version" ] && [ "$version" != "(none)" ] \
    || die "apt knows no prometheus package: apt-get update (Debian bookworm sources)?"
mkdir -p "$CACHE_DIR"
if [ "$refresh_debs" = 0 ] && [ -f "$DEBS/.stamp" ] && [ "$(cat "$DEBS/.stamp")" = "$version" ]; then
    log "prometheus $version debs present in $DEBS: reused"
else
    log "downloading prometheus $version and its dependencies into $DEBS"
    download_debs prometheus "$DEBS"
    echo "$version" >"$DEBS/.stamp"
fi
log "$(ls "$DEBS"/*.deb | wc -l) packages, $(du -sh "$DEBS" | cut -f1)"

# --- 3. image ----------------------------------------------------------------------------
cp "$ROOT/Dockerfile.prometheus" "$DEBS/Dockerfile"
printf '%s\n' Dockerfile .stamp >"$DEBS/.dockerignore"
network=()
if docker build --help 2>/dev/null | grep -q -- '--network'; then network=(--network none); fi
log "docker build ${network[*]} -t $IMAGE (Dockerfile.prometheus)"
docker build --force-rm "${network[@]}" "${build_cache[@]}" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --label "org.shardnet.prometheus=$version" \
    -t "$IMAGE" "$DEBS"

# --- 4. smoke check ------------------------------------------------------------------
docker run --rm --network none "$IMAGE" --version | grep -q "prometheus, version" \
    || die "'docker run $IMAGE --version' does not show Prometheus"
docker run --rm --network none --entrypoint promtool \
    -v "$ROOT/prometheus:/etc/prometheus:ro" "$IMAGE" \
    check config /etc/prometheus/docker.yml >/dev/null \
    || die "promtool in $IMAGE refuses prometheus/docker.yml"
log "built $IMAGE (prometheus $version): $(docker image inspect -f '{{.Size}}' "$IMAGE" \
    | awk '{ printf "%.0f MB", $1 / 1e6 }')"
