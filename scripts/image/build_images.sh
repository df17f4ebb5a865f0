#!/usr/bin/env bash
# Build the shardnet Docker image on a machine whose engine cannot pull images and whose
# `docker build` must not reach a package index (see docs/ENVIRONMENT.md of the project).
#
#   1. base: use python:3.11-slim if the engine has it or can pull it; otherwise build a
#      stand-in of that name from Debian bookworm with debootstrap (python3 is 3.11 there),
#      the mirror taken from this machine's apt sources. The stand-in's root file system is
#      cached as a tarball, so a later run only re-imports it.
#   2. wheelhouse/: wheels of the project's dependencies and its build backend, built on
#      the host with the project virtualenv's pip (reused while pyproject.toml is unchanged),
#      and of the compiled Ed25519 verifier native/ed25519 when cargo is here (optional).
#   3. docker build --network none -t shardnet:latest . (the Dockerfile installs from the
#      wheelhouse with --no-index; without a wheelhouse the same Dockerfile uses the index),
#      with iproute2 from imagedebs/: .debs the host's apt downloads (step 2b).
#   4. smoke check: `shardnet --help`, every compiled extension loads, `pip check`.
#
# Usage: scripts/image/build_images.sh [--refresh-wheels] [--rebuild-base] [--no-cache]
#   [--base-only] (step 1 only: build_prometheus_image.sh builds on the same base)
# Environment: SHARDNET_IMAGE (shardnet:latest), SHARDNET_BASE_IMAGE (python:3.11-slim),
#   SHARDNET_DEBIAN_MIRROR (default: from /etc/apt), SHARDNET_CACHE_DIR (~/.cache/shardnet),
#   SHARDNET_PIP (.venv/bin/pip), SHARDNET_BUILD_TIMINGS (bench-results/build_images.json).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

IMAGE=${SHARDNET_IMAGE:-shardnet:latest}
BASE_IMAGE=${SHARDNET_BASE_IMAGE:-python:3.11-slim}
SUITE=bookworm
CACHE_DIR=${SHARDNET_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shardnet}
PIP=${SHARDNET_PIP:-$ROOT/.venv/bin/pip}
WHEELHOUSE=$ROOT/wheelhouse
TIMINGS=${SHARDNET_BUILD_TIMINGS:-$ROOT/bench-results/build_images.json}
STANDIN_LABEL=org.shardnet.standin

refresh_wheels=0
rebuild_base=0
base_only=0
build_cache=()
for arg in "$@"; do
    case $arg in
        --refresh-wheels) refresh_wheels=1 ;;
        --rebuild-base) rebuild_base=1 ;;
        --no-cache) build_cache=(--no-cache) ;;
        --base-only) base_only=1 ;;
        -h|--help) sed -n '2,23p' "$ROOT/scripts/image/build_images.sh" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build_images.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'build_images.sh: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/image/debs.sh
. "$ROOT/scripts/image/debs.sh"
now() { date +%s.%N; }
declare -A seconds=()
declare -A how=()
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "building the base image needs root (debootstrap) or sudo"
    SUDO=(sudo)
fi

docker info >/dev/null 2>&1 || die "docker info failed: is the Docker engine running?"
# The legacy builder serves when the buildx plugin is missing; DOCKER_BUILDKIT=1 would fail.
if ! docker buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=0; fi

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# --- 1. base image -----------------------------------------------------------------
ensure_debootstrap() {
    command -v debootstrap >/dev/null && return
    log "installing debootstrap with apt-get"
    "${SUDO[@]}" apt-get install -y -qq debootstrap >/dev/null 2>&1 \
        || { "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" apt-get install -y -qq debootstrap; }
}

build_standin_rootfs() {  # $1 = tarball to write
    local tarball=$1 mirror rootfs
    ensure_debootstrap
    mirror=${SHARDNET_DEBIAN_MIRROR:-$(python3 "$ROOT/scripts/image/apt_mirror.py" --suite "$SUITE")} \
        || die "no Debian mirror found in /etc/apt; set SHARDNET_DEBIAN_MIRROR"
    rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/shardnet-rootfs.XXXXXX")
    # shellcheck disable=SC2064
    trap "${SUDO[*]} rm -rf '$rootfs'" EXIT
    log "debootstrap --variant=minbase $SUITE from $mirror"
    "${SUDO[@]}" debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,passwd,ca-certificates \
        "$SUITE" "$rootfs" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE_DIR/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE_DIR/debootstrap.log)"; }
    # Make it behave like the official image: `python` and `pip` on PATH, and pip allowed
    # to install outside a virtualenv (Debian marks its python EXTERNALLY-MANAGED, PEP 668).
    "${SUDO[@]}" sh -eu -c '
        r=$1
        ln -sf /usr/bin/python3 "$r/usr/local/bin/python"
        ln -sf /usr/bin/pip3 "$r/usr/local/bin/pip"
        rm -f "$r"/usr/lib/python3*/EXTERNALLY-MANAGED
        # Keep it slim, as the official Debian slim images do: no docs, man pages, apt lists.
        mkdir -p "$r/etc/dpkg/dpkg.cfg.d"
        printf "%s\n" "path-exclude /usr/share/doc/*" "path-include /usr/share/doc/*/copyright" \
            "path-exclude /usr/share/man/*" "path-exclude /usr/share/info/*" \
            "path-exclude /usr/share/locale/*" >"$r/etc/dpkg/dpkg.cfg.d/docker-slim"
        find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
        rm -rf "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* \
            "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
            "$r"/var/log/*.log "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old
        chroot "$r" python3 -c "import platform; print(platform.python_version())" \
            >"$r/.python-version"
    ' sh "$rootfs"
    "${SUDO[@]}" tar --numeric-owner -C "$rootfs" \
        --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' --exclude=./.python-version \
        -cf "$tarball.tmp" .
    cp "$rootfs/.python-version" "$tarball.python-version"
    "${SUDO[@]}" chown "$(id -u):$(id -g)" "$tarball.tmp"
    mv "$tarball.tmp" "$tarball"
    "${SUDO[@]}" rm -rf "$rootfs"
    trap - EXIT
}

ensure_base_image() {
    local t0 tarball pyver
    t0=$(now)
    if have_image "$BASE_IMAGE" && [ "$rebuild_base" = 0 ]; then
        how[base]=present
        log "base image $BASE_IMAGE present"
        return
    fi
    if [ "$rebuild_base" = 0 ] && timeout 120 docker pull "$BASE_IMAGE" >/dev/null 2>&1; then
        how[base]=pulled
        seconds[base]=$(elapsed "$t0")
        log "pulled $BASE_IMAGE"
        return
    fi
    mkdir -p "$CACHE_DIR"
    tarball=$CACHE_DIR/python-3.11-slim-standin-$SUITE-$(uname -m).tar
    if [ -s "$tarball" ] && [ "$rebuild_base" = 0 ]; then
        how[base]=standin-cached
        log "re-importing the cached stand-in $tarball"
    else
        how[base]=standin-debootstrap
        log "$BASE_IMAGE cannot be pulled: building a stand-in from Debian $SUITE"
        build_standin_rootfs "$tarball"
    fi
    pyver=$(cat "$tarball.python-version")
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "ENV PYTHON_VERSION=$pyver" \
        --change "LABEL $STANDIN_LABEL=debootstrap-$SUITE" \
        --change 'CMD ["python3"]' \
        --message "shardnet stand-in for $BASE_IMAGE (Debian $SUITE, Python $pyver)" \
        "$tarball" "$BASE_IMAGE" >/dev/null
    seconds[base]=$(elapsed "$t0")
    log "imported stand-in $BASE_IMAGE (Python $pyver) in ${seconds[base]} s"
}

# --- 2. wheelhouse -------------------------------------------------------------------
build_wheelhouse() {
    local t0 want
    t0=$(now)
    [ -x "$PIP" ] || make -C "$ROOT" venv
    # Reuse the wheelhouse while the runtime dependencies and the build backend stay the same
    # (dev extras and other pyproject.toml edits do not matter to the image).
    want="$(python3 -c 'import json, tomllib; p = tomllib.load(open("pyproject.toml", "rb"));
print(json.dumps([p["project"]["dependencies"], p["build-system"]["requires"]]))' | sha256sum | cut -c1-64)"
    want="$want $("$PIP" --version | awk '{print $2}')"
    if [ "$refresh_wheels" = 0 ] && [ -f "$WHEELHOUSE/.shardnet-stamp" ] \
        && [ "$(cat "$WHEELHOUSE/.shardnet-stamp")" = "$want" ]; then
        how[wheels]=reused
        log "wheelhouse/ is current for the runtime dependencies: reused"
    else
        how[wheels]=built
        log "building wheels of the dependencies and the build backend into wheelhouse/"
        rm -rf "$WHEELHOUSE"
        mkdir -p "$WHEELHOUSE"
        # The project's own wheel is built too (it proves the project builds) but is left out
        # of the image's build context by .dockerignore: the Dockerfile builds the project
        # from the sources it copies, so an old wheelhouse never ships old code.
        "$PIP" wheel --quiet --disable-pip-version-check --wheel-dir "$WHEELHOUSE" \
            . 'setuptools>=77' wheel
        echo "$want" >"$WHEELHOUSE/.shardnet-stamp"
    fi
    build_native_wheel
    seconds[wheels]=$(elapsed "$t0")
    local local_built
    local_built=$(cd "$WHEELHOUSE" && ls ./*-linux_*.whl 2>/dev/null | xargs -r -n1 basename | tr '\n' ' ')
    log "wheelhouse: $(ls "$WHEELHOUSE"/*.whl | wc -l) wheels in ${seconds[wheels]} s${local_built:+; built here from sdists: $local_built}"
}

# The compiled Ed25519 verifier (native/ed25519): its wheel, built on the host with cargo
# (crates from crates.io), joins the wheelhouse; reused while its sources are unchanged.
# No cargo or a failed build: no wheel, and the image verifies with cryptography.
build_native_wheel() {
    local want
    want=$(cat native/ed25519/Cargo.toml native/ed25519/Cargo.lock native/ed25519/pyproject.toml \
        native/ed25519/src/*.rs | sha256sum | cut -c1-64)
    if ls "$WHEELHOUSE"/shardnet_ed25519-*.whl >/dev/null 2>&1 \
        && [ "$(cat "$WHEELHOUSE/.ed25519-stamp" 2>/dev/null)" = "$want" ]; then
        log "wheelhouse: shardnet_ed25519 wheel current, reused"; return
    fi
    mkdir -p "$CACHE_DIR"
    rm -f "$WHEELHOUSE"/shardnet_ed25519-*.whl "$WHEELHOUSE/.ed25519-stamp"
    if PATH="$PATH:$HOME/.cargo/bin" command -v cargo >/dev/null \
        && PATH="$PATH:$HOME/.cargo/bin" "$PIP" wheel --quiet --disable-pip-version-check \
            --no-deps --wheel-dir "$WHEELHOUSE" ./native/ed25519 >"$CACHE_DIR/native-ed25519.log" 2>&1; then
        echo "$want" >"$WHEELHOUSE/.ed25519-stamp"
        log "wheelhouse: built $(cd "$WHEELHOUSE" && ls shardnet_ed25519-*.whl)"
    else
        log "notice: no shardnet_ed25519 wheel (cargo missing or build failed: $CACHE_DIR/native-ed25519.log); the image verifies with cryptography"
    fi
}

# --- 2b. .debs for the image ------------------------------------------------------------
# iproute2 (tc, for `testnet init --latency/--bandwidth`) and what it depends on, downloaded
# with the host's apt into imagedebs/ with a Packages index: the Dockerfile installs from
# that flat repository with no network. Reused while the candidate version is the same.
IMAGE_DEBS=$ROOT/imagedebs
fetch_image_debs() {
    local version packages
    command -v apt-get >/dev/null || { log "no apt-get here: the image build asks apt's index"; return; }
    version=$(apt-cache policy iproute2 | awk '/Candidate:/ { print $2 }')
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        "${SUDO[@]}" apt-get update -qq >/dev/null 2>&1 || true
        version=$(apt-cache policy iproute2 | awk '/Candidate:/ { print $2 }')
    fi
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        log "apt knows no iproute2: the image build asks apt's index (offline: no tc)"; return
    fi
    if [ -f "$IMAGE_DEBS/.stamp" ] && [ "$(cat "$IMAGE_DEBS/.stamp")" = "$version" ]; then
        log "imagedebs/: iproute2 $version present, reused"; return
    fi
    download_debs iproute2 "$IMAGE_DEBS"
    echo "$version" >"$IMAGE_DEBS/.stamp"
    log "imagedebs/: iproute2 $version and its dependencies, $(ls "$IMAGE_DEBS"/*.deb | wc -l) packages"
}

# --- 3. image --------------------------------------------------------------------------
build_image() {
    local t0 network=() previous digest stage
    t0=$(now)
    previous=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    if docker build --help 2>/dev/null | grep -q -- '--network'; then network=(--network none); fi
    # The label lets tests/docker/test_docker_image.py see whether the image matches the tree.
    digest=$(python3 "$ROOT/scripts/image/digest.py")
    log "docker build ${network[*]} -t $IMAGE ."
    docker build --force-rm "${network[@]}" "${build_cache[@]}" \
        --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --label "org.shardnet.source-digest=$digest" \
        -t "$IMAGE" "$ROOT" 2>&1 | tee "$CACHE_DIR/last-build.log"
    seconds[image]=$(elapsed "$t0")
    log "built $IMAGE in ${seconds[image]} s"
    # The image this run replaced: remove it if nothing else names or uses it.
    if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ] \
        && [ "$(docker image inspect -f '{{len .RepoTags}}' "$previous" 2>/dev/null)" = 0 ]; then
        docker rmi "$previous" >/dev/null 2>&1 || true
    fi
    # The legacy builder leaves the build stage as an untagged image (the next build's layer
    # cache). Keep the one this build used (the step before the second FROM in its output);
    # remove the one the previous run recorded, if it is another and still untagged.
    stage=$(awk '/^Step [0-9]+\/[0-9]+ : FROM /{ if (++froms == 2) { print last; exit } }
                 /^ ---> [0-9a-f]+$/ { last = $2 }' "$CACHE_DIR/last-build.log")
    [ -n "$stage" ] || return 0  # BuildKit: no stage images left behind
    stage=$(docker image inspect -f '{{.Id}}' "$stage")
    local stage_file=$CACHE_DIR/build-stage-image old
    old=$(cat "$stage_file" 2>/dev/null || true)
    if [ -n "$old" ] && [ "$old" != "$stage" ] \
        && [ "$(docker image inspect -f '{{len .RepoTags}}' "$old" 2>/dev/null)" = 0 ]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
    echo "$stage" >"$stage_file"
}

# --- 4. smoke check ------------------------------------------------------------------
smoke_check() {
    local t0
    t0=$(now)
    docker run --rm --network none "$IMAGE" --help | grep -q 'Usage: shardnet' \
        || die "'docker run $IMAGE --help' does not show the shardnet CLI"
    docker run --rm --network none --entrypoint python "$IMAGE" -c '
import ctypes, pathlib, sys, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
bad = []
for so in sorted(site.rglob("*.so*")):
    try:
        ctypes.CDLL(str(so))
    except OSError as error:
        bad.append(f"{so.relative_to(site)}: {error}")
import scripts.cli.main, consensus, sharding
# pip check, without pip (it left the virtualenv): every requirement installed and in range
from importlib.metadata import distributions
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
have = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
for dist in distributions():
    for line in dist.requires or ():
        req = Requirement(line)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        version = have.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            bad.append(f"{dist.metadata['Name']} needs {req}, has {version}")
print("\n".join(bad) or "ok", file=sys.stderr if bad else sys.stdout)
sys.exit(1 if bad else 0)
' >/dev/null || die "the image's compiled dependencies do not all load (glibc/libraries?)"
    log "the image verifies signatures with: $(docker run --rm --network none --entrypoint python \
        "$IMAGE" -c 'from consensus.kernel.crypto import VERIFY_BACKEND; print(VERIFY_BACKEND)')"
    seconds[smoke]=$(elapsed "$t0")
    log "smoke check passed in ${seconds[smoke]} s (CLI, every compiled extension loads, requirements consistent)"
}

write_timings() {
    local size base_size
    size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
    base_size=$(docker image inspect -f '{{.Size}}' "$BASE_IMAGE")
    mkdir -p "$(dirname "$TIMINGS")"
    cat >"$TIMINGS" <<EOF
{"image": "$IMAGE", "image_bytes": $size, "base_image": "$BASE_IMAGE", "base_bytes": $base_size,
 "base": "${how[base]}", "base_seconds": ${seconds[base]:-0},
 "wheels": "${how[wheels]}", "wheels_seconds": ${seconds[wheels]:-0},
 "image_seconds": ${seconds[image]:-0}, "smoke_seconds": ${seconds[smoke]:-0},
 "total_seconds": $(elapsed "$T0")}
EOF
    log "$IMAGE: $(awk -v s="$size" 'BEGIN { printf "%.0f MB", s / 1e6 }') (base $(awk -v s="$base_size" 'BEGIN { printf "%.0f MB", s / 1e6 }')); timings in ${TIMINGS#"$ROOT"/}"
}

# One build at a time per cache folder (tests and users may start it concurrently).
mkdir -p "$CACHE_DIR"
if command -v flock >/dev/null; then
    exec 9>"$CACHE_DIR/build.lock"
    flock 9
fi

T0=$(now)
ensure_base_image
if [ "$base_only" = 1 ]; then exit 0; fi
build_wheelhouse
fetch_image_debs
build_image
smoke_check
write_timings
log "done in $(elapsed "$T0") s: docker run --rm $IMAGE --help"
