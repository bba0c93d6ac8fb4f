#!/usr/bin/env bash
# make up | down | logs: the compose stack in docker/compose.yaml.
# PROFILE picks the model server: gpu (TF Serving on an NVIDIA GPU), cpu (TF Serving on the
# CPU) or local (the project's model server). Default: gpu when `nvidia-smi` sees a GPU, else cpu.
# EXTRA_PROFILES adds more (e.g. "train load"). COMPOSE overrides the compose command.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="$ROOT/docker/compose.yaml"
action="${1:-}"

die() {
    printf 'make %s: %s\n' "${action:-up}" "$*" >&2
    exit 1
}

case "$action" in
    up | down | logs) ;;
    *) die "usage: compose.sh up|down|logs" ;;
esac

# A compose CLI that talks to a running engine. `docker --version` works without an engine,
# so ask the engine itself (docker info / podman info).
find_compose() {
    if [ -n "${COMPOSE:-}" ]; then
        echo "$COMPOSE"
        return
    fi
    if command -v docker > /dev/null && docker info > /dev/null 2>&1; then
        if docker compose version > /dev/null 2>&1; then
            echo "docker compose"
        elif command -v docker-compose > /dev/null; then
            echo "docker-compose"
        else
            die "the Docker engine runs but there is no compose v2 (install the docker-compose-plugin)"
        fi
        return
    fi
    if command -v podman > /dev/null && podman info > /dev/null 2>&1; then
        if podman compose version > /dev/null 2>&1; then
            echo "podman compose"
        elif command -v podman-compose > /dev/null; then
            echo "podman-compose"
        else
            die "podman runs but has no compose (podman >= 4.7 'podman compose' or podman-compose)"
        fi
        return
    fi
    die "no container engine: 'docker info' cannot reach a Docker daemon and podman is not usable; start Docker (or install Podman) and retry"
}

compose="$(find_compose)"
profile="${PROFILE:-}"
if [ -z "$profile" ]; then
    if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then
        profile=gpu
    else
        profile=cpu
    fi
fi
case "$profile" in
    gpu | cpu | local) ;;
    *) die "PROFILE=$profile: choose gpu, cpu or local" ;;
esac

args=(-f "$COMPOSE_FILE" --profile "$profile")
for extra in ${EXTRA_PROFILES:-}; do
    args+=(--profile "$extra")
done

# compose.yaml resolves relative paths from docker/; hand it an absolute one.
models="${MODELS_DIR:-$ROOT/models}"
if [ -d "$models" ]; then
    MODELS_DIR="$(cd "$models" && pwd)"
    export MODELS_DIR
fi

case "$action" in
    up)
        [ -d "$models" ] || die "no models directory ($models): run 'make train export' first"
        echo "compose: profile $profile ($compose)" >&2
        # shellcheck disable=SC2086  # $compose is a command plus subcommand
        exec $compose "${args[@]}" up --detach --wait
        ;;
    down)
        # shellcheck disable=SC2086
        exec $compose "${args[@]}" --profile gpu --profile cpu --profile local \
            --profile train --profile load down --remove-orphans
        ;;
    logs)
        # shellcheck disable=SC2086
        exec $compose "${args[@]}" logs --follow --tail 200
        ;;
esac
