#!/usr/bin/env bash
# make container-test: build the project's images with podman from docker/*.Dockerfile and run
# trainer -> modelserver -> gateway on a private podman network, then predict through the
# gateway. Needs no Docker engine, no registry and no network inside the containers.
#
# All podman state (image store, run state, networks, caches) lives in $CONTAINER_TEST_DIR
# (default .container-test/). Kept between runs, so a second run is fast:
#   cache/bookworm-python.tar   debootstrap'ed Debian bookworm + python3 (the base stand-in)
#   cache/wheels/               wheelhouse of docker/requirements-*.txt, downloaded by the host's pip
#   storage/                    podman's image store = the layer cache
# Removed on exit: containers, network, volume. The store grows by the layers of each changed
# build; CONTAINER_TEST_FRESH=1 starts it over.
#
# Options (env): CONTAINER_TEST_DIR, CONTAINER_TEST_FRESH=1 (drop the image store first: a cold
# build that still reuses the downloads), BASE_IMAGE (use this base instead of the stand-in),
# DEBIAN_MIRROR (default: the first Debian URI apt uses), FASHION_MNIST_DIR, HOUSING_DATA,
# TRAIN_LIMIT (default 2000), KEEP_CONTAINERS=1 (leave them running to debug; tear down later
# with `bash docker/container-test.sh --down`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${CONTAINER_TEST_DIR:-$ROOT/.container-test}"
PREFIX="fs-ct"
NET="$PREFIX-net"
VOLUME="$PREFIX-models"
TAG="container-test"
STANDIN="localhost/fs-python-standin:3.11-slim-bookworm"
TRAIN_LIMIT="${TRAIN_LIMIT:-2000}"
START=$SECONDS
TIMINGS=()

log() { printf '[container-test +%ss] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() {
    printf 'container-test: %s\n' "$*" >&2
    exit 1
}
# step NAME CMD...: runs CMD, records its wall time for the summary.
step() {
    local name=$1 t0=$SECONDS
    shift
    log "$name"
    "$@"
    TIMINGS+=("$(printf '%-28s %4ss' "$name" "$((SECONDS - t0))")")
}

command -v podman > /dev/null ||
    die "podman is not installed (apt-get install podman buildah debootstrap uidmap fuse-overlayfs slirp4netns runc)"

# --- podman configuration: everything under $STATE -------------------------------------------
mkdir -p "$STATE"/{storage,run,networks,tmp,cache}
exec 9> "$STATE/.lock"
flock --nonblock 9 || die "another container-test is running on $STATE"
export CONTAINERS_STORAGE_CONF="$STATE/storage.conf"
export CONTAINERS_CONF="$STATE/containers.conf"
export TMPDIR="$STATE/tmp"
cat > "$CONTAINERS_STORAGE_CONF" << EOF
[storage]
driver = "${CONTAINER_TEST_STORAGE_DRIVER:-overlay}"
graphroot = "$STATE/storage"
runroot = "$STATE/run"
EOF
# runc, not crun: Debian 12's crun refuses hosts with cgroup v1 + an empty v2 ("hybrid"), as
# in many CI containers. default_ulimits = []: some hosts refuse podman's default nofile limit.
runtime=runc
command -v runc > /dev/null || runtime=crun
cat > "$CONTAINERS_CONF" << EOF
[containers]
default_ulimits = []
[engine]
runtime = "$runtime"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$STATE/run/libpod"
[network]
network_config_dir = "$STATE/networks"
EOF

cleanup() {
    local rc=$?
    if [ "${KEEP_CONTAINERS:-0}" = 1 ] && [ "$rc" = 0 ]; then
        log "KEEP_CONTAINERS=1: left running; tear down with: bash docker/container-test.sh --down"
        return
    fi
    if [ "$rc" != 0 ]; then
        for c in "$PREFIX-modelserver" "$PREFIX-gateway"; do
            if podman container exists "$c" 2> /dev/null; then
                echo "--- last logs of $c ---" >&2
                podman logs --tail 30 "$c" >&2 2>&1 || true
            fi
        done
    fi
    podman rm --force --time 5 "$PREFIX-gateway" "$PREFIX-modelserver" "$PREFIX-trainer" \
        > /dev/null 2>&1 || true
    podman network rm --force "$NET" > /dev/null 2>&1 || true
    podman volume rm --force "$VOLUME" > /dev/null 2>&1 || true
    # No `podman image prune`: podman counts the build cache's intermediate images as dangling.
    rm -rf "$STATE/tmp"
}
if [ "${1:-}" = "--down" ]; then
    KEEP_CONTAINERS=0
    cleanup
    exit 0
fi
trap cleanup EXIT

podman info > /dev/null 2> "$STATE/podman-info.err" ||
    die "podman cannot start: $(tail -n 1 "$STATE/podman-info.err")"

if [ "${CONTAINER_TEST_FRESH:-0}" = 1 ]; then
    log "CONTAINER_TEST_FRESH=1: dropping the image store"
    podman system reset --force > /dev/null 2>&1 || true
    mkdir -p "$STATE"/{storage,run,networks,tmp}
fi
cleanup # a previous run killed with SIGKILL leaves containers behind
mkdir -p "$STATE/tmp"

# --- base image: debootstrap'ed bookworm + python3, when the real base is absent ----------------
debian_mirror() {
    local uri
    uri="$(grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2> /dev/null |
        awk '{print $2}' | grep -E '/debian/?$' | head -n 1 || true)"
    [ -n "$uri" ] || uri="$(grep -h -E '^deb ' /etc/apt/sources.list 2> /dev/null |
        awk '{print $2}' | grep -E '/debian/?$' | head -n 1 || true)"
    echo "${uri:-http://deb.debian.org/debian}"
}

build_base_tarball() {
    local tar="$STATE/cache/bookworm-python.tar" rootfs="$STATE/tmp/rootfs"
    [ -s "$tar" ] && return 0
    command -v debootstrap > /dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    local mirror="${DEBIAN_MIRROR:-$(debian_mirror)}"
    log "debootstrap bookworm (minbase + python3) from $mirror"
    rm -rf "$rootfs"
    # The python:3.11-slim-bookworm stand-in: Debian bookworm's python3 is 3.11, python3-venv
    # gives `python3 -m venv` like the official image, passwd gives useradd.
    nice -n 10 debootstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates,passwd \
        bookworm "$rootfs" "$mirror" > "$STATE/debootstrap.log" 2>&1 ||
        die "debootstrap failed, see $STATE/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tar.part" . && mv "$tar.part" "$tar"
    rm -rf "$rootfs"
}

import_base() {
    podman image exists "$STANDIN" && return 0
    podman import --quiet \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' \
        "$STATE/cache/bookworm-python.tar" "$STANDIN" > /dev/null
}

if [ -n "${BASE_IMAGE:-}" ]; then
    podman image exists "$BASE_IMAGE" || die "BASE_IMAGE=$BASE_IMAGE is not in $STATE/storage"
elif podman image exists docker.io/library/python:3.11-slim-bookworm; then
    BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
else
    step "base tarball (debootstrap)" build_base_tarball
    step "base image (podman import)" import_base
    BASE_IMAGE="$STANDIN"
fi
log "base image: $BASE_IMAGE"

# --- wheelhouse: the host's pip (its index, proxy and CA settings) downloads once ---------------
# Builds then install offline (PIP_NO_INDEX + PIP_FIND_LINKS), so containers need neither the
# network nor this machine's extra CA certificates / pip.conf.
fetch_wheels() {
    local wheels="$STATE/cache/wheels" stamp tf
    stamp="$(cat "$ROOT"/docker/requirements-*.txt | sha256sum | cut -c1-16)"
    [ -f "$wheels/.stamp-$stamp" ] && return 0
    local py="$ROOT/.venv/bin/python"
    [ -x "$py" ] || py=python3
    # The ml images install tensorflow-cpu at the version docker/requirements-ml.txt pins.
    tf="$(grep -E '^tensorflow==' "$ROOT/docker/requirements-ml.txt" | sed 's/^tensorflow/tensorflow-cpu/')"
    mkdir -p "$wheels"
    # not the full tensorflow wheel (570 MB) the ml lock names: the images take tensorflow-cpu
    grep -v -E '^tensorflow==' "$ROOT/docker/requirements-ml.txt" > "$STATE/tmp/requirements-ml.txt"
    nice -n 10 "$py" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --no-deps --dest "$wheels" \
        --requirement "$ROOT/docker/requirements-base.txt" \
        --requirement "$STATE/tmp/requirements-ml.txt" \
        --requirement "$ROOT/docker/requirements-load.txt" \
        "$tf" 'setuptools>=68' wheel 2> "$STATE/pip-download.log" ||
        die "pip download failed, see $STATE/pip-download.log"
    touch "$wheels/.stamp-$stamp"
}
step "wheelhouse (pip download)" fetch_wheels

# --- images --------------------------------------------------------------------------------------
build() { # build IMAGE DOCKERFILE TARGET
    # --format docker: the OCI image format has no HEALTHCHECK, podman would drop it.
    nice -n 10 podman build --layers --quiet --format docker \
        --ignorefile "$ROOT/docker/context.dockerignore" \
        --file "$ROOT/docker/$2" --target "$3" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels \
        --volume "$STATE/cache/wheels:/wheels:ro" \
        --tag "$1" "$ROOT" > "$STATE/build-$3.log" 2>&1 || {
        tail -n 30 "$STATE/build-$3.log" >&2
        die "building $1 failed, see $STATE/build-$3.log"
    }
}
step "build trainer" build "localhost/fs-trainer:$TAG" ml.Dockerfile trainer
step "build modelserver" build "localhost/fs-modelserver:$TAG" ml.Dockerfile modelserver
step "build gateway" build "localhost/fs-gateway:$TAG" gateway.Dockerfile gateway
step "build locust" build "localhost/fs-locust:$TAG" locust.Dockerfile locust

# --- image properties the Dockerfiles promise ------------------------------------------------------
check_images() {
    local img uid
    for img in fs-trainer fs-modelserver fs-gateway fs-locust; do
        uid="$(podman run --rm --no-healthcheck --network none --entrypoint id \
            "localhost/$img:$TAG" -u)"
        [ "$uid" != 0 ] || die "$img runs as root"
    done
    if podman run --rm --no-healthcheck --network none --entrypoint python \
        "localhost/fs-gateway:$TAG" \
        -c 'import tensorflow' > /dev/null 2>&1; then
        die "the gateway image contains tensorflow"
    fi
    if podman run --rm --no-healthcheck --network none --entrypoint sh \
        "localhost/fs-gateway:$TAG" \
        -c 'command -v gcc || command -v pip || command -v cc' > /dev/null 2>&1; then
        die "the gateway image contains build tools (gcc/cc/pip)"
    fi
}
step "image checks" check_images

# --- run: trainer -> modelserver -> gateway ------------------------------------------------------
find_data() {
    local d
    for d in "${FASHION_MNIST_DIR:-}" /usr/share/datasets/fashion-mnist "$HOME/.keras/datasets/fashion-mnist"; do
        if [ -n "$d" ] && ls "$d"/train-images-idx3-ubyte* > /dev/null 2>&1; then
            FASHION_DIR="$d"
            break
        fi
    done
    [ -n "${FASHION_DIR:-}" ] ||
        die "no Fashion-MNIST IDX files: apt-get install dataset-fashion-mnist or set FASHION_MNIST_DIR"
    HOUSING_FILE="${HOUSING_DATA:-}"
    if [ -n "$HOUSING_FILE" ]; then
        [ -f "$HOUSING_FILE" ] || die "HOUSING_DATA=$HOUSING_FILE does not exist"
        HOUSING_FILE="$(realpath "$HOUSING_FILE")"
    else
        log "HOUSING_DATA unset: training fashion_mnist only"
    fi
}
find_data
HOST_PY="$ROOT/.venv/bin/python"
[ -x "$HOST_PY" ] || die "no $HOST_PY: run make venv first"

run_trainer() {
    local args=(--rm --name "$PREFIX-trainer" --network none
        --volume "$VOLUME:/models"
        --volume "$FASHION_DIR:/data/fashion-mnist:ro" --env FASHION_MNIST_DIR=/data/fashion-mnist)
    if [ -n "$HOUSING_FILE" ]; then
        args+=(--volume "$HOUSING_FILE:/data/$(basename "$HOUSING_FILE"):ro"
            --env "HOUSING_DATA=/data/$(basename "$HOUSING_FILE")")
    else
        args+=(--env MODEL=fashion_mnist)
    fi
    podman volume create "$VOLUME" > /dev/null
    nice -n 10 podman run "${args[@]}" "localhost/fs-trainer:$TAG" \
        --epochs 1 --limit "$TRAIN_LIMIT" > "$STATE/trainer.log" 2>&1 || {
        tail -n 30 "$STATE/trainer.log" >&2
        die "the trainer failed, see $STATE/trainer.log"
    }
}
step "run trainer" run_trainer

# wait_healthy CONTAINER SECONDS: podman has no systemd timer here, so run the image's
# HEALTHCHECK ourselves until it passes.
wait_healthy() {
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        [ "$(podman inspect --format '{{.State.Running}}' "$1")" = true ] ||
            die "$1 exited: $(podman logs --tail 5 "$1" 2>&1 | tr '\n' ' ')"
        podman healthcheck run "$1" > /dev/null 2>&1 && return 0
        sleep 2
    done
    die "$1 not healthy after $2 s"
}

start_modelserver() {
    podman network create "$NET" > /dev/null
    nice -n 10 podman run --detach --name "$PREFIX-modelserver" \
        --network "$NET" --network-alias modelserver \
        --volume "$VOLUME:/models:ro" "localhost/fs-modelserver:$TAG" \
        > /dev/null 2>> "$STATE/podman-run.log"
    wait_healthy "$PREFIX-modelserver" 180
}
step "modelserver healthy" start_modelserver

# compose.yaml's model-status health check (bash /dev/tcp, for TF Serving's curl-less image),
# run exactly as compose would, against the model server speaking TF Serving's REST API.
compose_healthcheck() {
    local cmd
    cmd="$("$ROOT/.venv/bin/docker-compose" -f "$ROOT/docker/compose.yaml" --profile local \
        config --format json | "$HOST_PY" -c '
import json, sys
test = json.load(sys.stdin)["services"]["modelserver"]["healthcheck"]["test"]
assert test[:3] == ["CMD", "bash", "-c"], test
print(test[3])')" || die "cannot read the health check from docker/compose.yaml"
    podman exec "$PREFIX-modelserver" bash -c "$cmd" ||
        die "compose's model-status health check fails against a healthy model server"
}
step "compose health check" compose_healthcheck

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_gateway() {
    GATEWAY_PORT="$(free_port)"
    local required=fashion_mnist,housing
    [ -n "$HOUSING_FILE" ] || required=fashion_mnist
    podman run --detach --name "$PREFIX-gateway" --network "$NET" \
        --env "GATEWAY_REQUIRED_MODELS=$required" \
        --publish "127.0.0.1:$GATEWAY_PORT:8000" \
        --env MODEL_SERVER_GRPC=modelserver:8500 --env MODEL_CARDS_DIR=/models \
        --volume "$VOLUME:/models:ro" "localhost/fs-gateway:$TAG" \
        > /dev/null 2>> "$STATE/podman-run.log"
    wait_healthy "$PREFIX-gateway" 60
    local deadline=$((SECONDS + 60))
    until curl --silent --fail --max-time 3 "http://127.0.0.1:$GATEWAY_PORT/readyz" > /dev/null; do
        [ $SECONDS -lt $deadline ] || die "gateway /readyz not ready after 60 s"
        sleep 1
    done
}
step "gateway ready" start_gateway

predict() {
    local png="$STATE/tmp/sample.png" out="$STATE/tmp/predict.json" code
    "$HOST_PY" "$ROOT/docker/predict_check.py" png "$FASHION_DIR" "$png"
    # The gateway takes the image as an upload (multipart field "image").
    code="$(curl --silent --show-error --max-time 10 --output "$out" --write-out '%{http_code}' \
        -F "image=@$png;type=image/png" "http://127.0.0.1:$GATEWAY_PORT/predict")"
    [ "$code" = 200 ] || die "POST /predict answered HTTP $code: $(head -c 300 "$out")"
    local name
    name="$("$HOST_PY" "$ROOT/docker/predict_check.py" check "$out")" ||
        die "POST /predict answered without a class: $(head -c 300 "$out")"
    log "predicted class: $name; answer: $(head -c 200 "$out")"
}
step "predict through gateway" predict

# --- report --------------------------------------------------------------------------------------
{
    echo "container-test passed in $((SECONDS - START)) s (base image: $BASE_IMAGE)"
    printf '%s\n' "${TIMINGS[@]}"
    podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "fs-|$STANDIN" | sort -u
} | tee "$STATE/last-run.txt" >&2
