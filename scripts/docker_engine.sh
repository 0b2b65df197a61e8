#!/usr/bin/env bash
# Make a Docker engine available on this machine (Debian's packages), for the compose test
# and `make docker-image`. Idempotent: does nothing when `docker info` already answers.
#
#   scripts/docker_engine.sh          install docker.io + docker-compose + debootstrap if missing,
#                                     start dockerd if no engine answers; exit 0 when one does
#   scripts/docker_engine.sh --tools  only install the tools (docker-compose config needs no engine)
#
# dockerd runs without iptables and without the default bridge (user-defined networks such as
# compose's own still work); its log is /tmp/fedmjp-dockerd.log, its pid /tmp/fedmjp-dockerd.pid.
set -euo pipefail

log() { echo "docker_engine: $*" >&2; }

if [ "${1:-}" = --tools ]; then
    need=()
    command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
    command -v docker >/dev/null 2>&1 || need+=(docker.io)
    if ((${#need[@]})); then
        [ "$(id -u)" = 0 ] || { log "need root to install ${need[*]}"; exit 1; }
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    exit 0
fi

if docker info >/dev/null 2>&1; then
    log "engine already running"
else
    need=()
    command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
    command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
    command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
    if ((${#need[@]})); then
        [ "$(id -u)" = 0 ] || { log "need root to install ${need[*]}"; exit 1; }
        log "installing ${need[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    [ "$(id -u)" = 0 ] || { log "need root to start dockerd"; exit 1; }
    log "starting dockerd"
    # setsid: the engine must outlive the shell (and the pytest run) that started it.
    setsid dockerd --iptables=false --bridge=none --storage-driver=overlay2 \
        >/tmp/fedmjp-dockerd.log 2>&1 < /dev/null &
    echo $! > /tmp/fedmjp-dockerd.pid
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { log "dockerd did not start: $(tail -5 /tmp/fedmjp-dockerd.log)"; exit 1; }
fi
for tool in docker-compose debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null; }
done
log "ready: $(docker version --format 'server {{.Server.Version}}') $(docker-compose version --short)"
