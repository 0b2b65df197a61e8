#!/usr/bin/env bash
# Build the fedmjp image offline: a Debian base made with debootstrap (no image registry is
# needed), a wheelhouse of every dependency taken with the host's pip, an image with the
# dependencies' venv (deploy/dependencies.Dockerfile), then the project on it (deploy/Dockerfile).
#
#   scripts/docker_build.sh [IMAGE]     default IMAGE: fedmjp:latest
#
# Environment:
#   BASE_IMAGE     use this base instead of building fedmjp-base:bookworm with debootstrap
#                  (e.g. python:3.11-slim-bookworm where a registry is reachable)
#   TORCH          wheelhouse (default: the torch wheels pip finds for this host, PyPI's CUDA
#                  builds, which also run on the CPU) | cpu (PyTorch's CPU-only wheels, from
#                  its CPU index, smaller image; needs that index reachable from this host)
#   FORCE=1        rebuild even when the cached image's inputs hash matches
#   WHEELHOUSE     where the wheels are kept (default ${XDG_CACHE_HOME:-~/.cache}/fedmjp/wheelhouse):
#                  outside the checkout, so every clone on a machine shares one (3 GB)
#
# The three images are cached: each carries a label with the hash of its inputs and is reused
# when the hash matches. The wheelhouse ($WHEELHOUSE) lives outside the checkout; the rootfs is kept
# out of git and out of the build context (deploy/.gitignore, .dockerignore).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${1:-fedmjp:latest}"
TORCH="${TORCH:-wheelhouse}"
WHEELHOUSE="${WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/fedmjp/wheelhouse}"
PYTHON="${PYTHON:-$(test -x .venv/bin/python && echo .venv/bin/python || echo python3)}"
SUITE=bookworm
log() { echo "docker_build: $*" >&2; }
label_of() { docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
now() { date +%s; }

# 1. The base image: Debian's python3 (3.11 on bookworm, the same as the wheels').
base_inputs=$(printf 'debootstrap minbase %s python3 python3-venv python3-pip ca-certificates v1' "$SUITE" | sha256sum | cut -c1-16)
if [ -z "${BASE_IMAGE:-}" ]; then
    BASE_IMAGE="fedmjp-base:$SUITE"
    if [ "$(label_of "$BASE_IMAGE" fedmjp.inputs)" != "$base_inputs" ]; then
        start=$(now)
        rootfs=$(mktemp -d /tmp/fedmjp-rootfs.XXXXXX)
        trap 'rm -rf "$rootfs"' EXIT
        log "debootstrap $SUITE into $rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            "$SUITE" "$rootfs" >/tmp/fedmjp-debootstrap.log 2>&1 \
            || { tail -20 /tmp/fedmjp-debootstrap.log >&2; exit 1; }
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | docker import \
            --change "LABEL fedmjp.inputs=$base_inputs" \
            --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
        rm -rf "$rootfs"
        trap - EXIT
        log "base image $BASE_IMAGE built in $(( $(now) - start )) s"
    else
        log "base image $BASE_IMAGE is up to date"
    fi
fi
base_id=$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE")

# 2. The wheelhouse: the project's dependencies as the host's pip resolves them (local disk
#    here, PyPI elsewhere). torch/torchvision are the pinned 2.14.1/0.29.1.
requirements="$WHEELHOUSE/requirements.txt"
mkdir -p "$WHEELHOUSE"
"$PYTHON" - > "$requirements.new" <<'PY'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print("\n".join([*deps, "setuptools>=68", "wheel"]))
PY
if ! cmp -s "$requirements.new" "$requirements" || [ ! -f "$WHEELHOUSE/.complete" ]; then
    start=$(now)
    rm -f "$WHEELHOUSE/.complete"
    extra=()
    [ "$TORCH" = cpu ] && extra=(--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple)
    log "pip download into $WHEELHOUSE"
    "$PYTHON" -m pip download --quiet --only-binary=:all: -d "$WHEELHOUSE" "${extra[@]}" \
        -r "$requirements.new" 2> >(grep -v "is ignored: it is neither" >&2)
    mv "$requirements.new" "$requirements"
    touch "$WHEELHOUSE/.complete"
    log "wheelhouse ready in $(( $(now) - start )) s ($(du -sh "$WHEELHOUSE" | cut -f1))"
else
    rm -f "$requirements.new"
fi

# Build an image unless the one tagged NAME carries this inputs hash; then drop the image it
# replaced (containers still on it keep it) and older untagged ones of ours: a build machine's
# disk is not endless. Arguments: NAME INPUTS docker-build-arguments...
build_image() {
    local name=$1 inputs=$2 previous start
    shift 2
    if [ -z "${FORCE:-}" ] && [ "$(label_of "$name" fedmjp.inputs)" = "$inputs" ]; then
        log "image $name is up to date ($inputs)"
        return 0
    fi
    start=$(now)
    previous=$(docker image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
    log "building $name"
    # The legacy builder (no buildx here); its layer cache makes a source-only change cheap.
    DOCKER_BUILDKIT=0 docker build --quiet --label "fedmjp.inputs=$inputs" -t "$name" "$@" >/dev/null
    [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$name")" ] \
        && docker rmi "$previous" >/dev/null 2>&1 || true
    docker image prune --force --filter label=fedmjp.inputs >/dev/null 2>&1 || true
    log "image $name built in $(( $(now) - start )) s ($(docker image inspect --format '{{.Size}}' "$name" | awk '{printf "%.1f GB", $1/1e9}'))"
}

# A full disk shows up deep inside a build as a failed layer write; say it first.
root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null || echo /var/lib/docker)
free_gb=$(df --output=avail -BG "$root" 2>/dev/null | tail -1 | tr -dc 0-9)
[ -n "$free_gb" ] && [ "$free_gb" -lt 10 ] \
    && log "warning: only ${free_gb} GB free under $root; the dependencies image needs about 7 GB"

# 3. The dependencies image: one venv from the wheelhouse, served to the build over HTTP on
#    loopback so that the 3 GB of wheels stay out of the build context and out of every layer.
DEPENDENCIES=fedmjp-dependencies:latest
dependency_inputs=$( {
    echo "$base_id"
    cat deploy/dependencies.Dockerfile
    # Each wheel's name and size (not ls -l's "total": block counts differ between copies of one wheelhouse).
    find "$WHEELHOUSE" -maxdepth 1 -type f -name '*.whl' -printf '%s %f\n' | LC_ALL=C sort
} | sha256sum | cut -c1-16)
if [ -n "${FORCE:-}" ] || [ "$(label_of "$DEPENDENCIES" fedmjp.inputs)" != "$dependency_inputs" ]; then
    port=$("$PYTHON" -c 'from fedmjp.launch.processes import free_port; print(free_port())')
    "$PYTHON" -m http.server --bind 127.0.0.1 --directory "$WHEELHOUSE" "$port" >/dev/null 2>&1 &
    server=$!
    trap 'kill $server 2>/dev/null' EXIT
    empty=$(mktemp -d)
    build_image "$DEPENDENCIES" "$dependency_inputs" --network host -f deploy/dependencies.Dockerfile \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "WHEELS=http://127.0.0.1:$port" "$empty"
    rmdir "$empty"
    kill "$server"
    trap - EXIT
else
    log "image $DEPENDENCIES is up to date ($dependency_inputs)"
fi

# 4. The project image on top; its label hashes everything that goes into it.
inputs=$( {
    echo "$(docker image inspect --format '{{.Id}}' "$DEPENDENCIES") $TORCH"
    cat deploy/Dockerfile .dockerignore pyproject.toml README.md
    git ls-files -co --exclude-standard -- fedmjp clients server scenarios scripts/register_supernodes.sh | LC_ALL=C sort | xargs cat
} | sha256sum | cut -c1-16)
build_image "$IMAGE" "$inputs" -f deploy/Dockerfile --build-arg "DEPENDENCIES=$DEPENDENCIES" \
    --build-arg "TORCH=$TORCH" .
