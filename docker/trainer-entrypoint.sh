#!/bin/sh
# Trainer image entry point: `make train export` without make.
# Arguments go to `python -m training train` (e.g. --epochs 1 --limit 2000).
# Settings (env): MODEL (all | fashion_mnist | housing; default all), MODELS_DIR (default /models, the mounted volume), ARTIFACTS_DIR (default
# /tmp/artifacts), EXPORT_VERSION (default: next free version), FASHION_MNIST_DIR / HOUSING_DATA
# (mounted data; without them the training code downloads it).
set -eu
MODELS_DIR="${MODELS_DIR:-/models}"
ARTIFACTS_DIR="${ARTIFACTS_DIR:-/tmp/artifacts}"
MODEL="${MODEL:-all}"
if [ ! -w "$MODELS_DIR" ]; then
    echo "trainer: $MODELS_DIR is not writable by uid $(id -u); mount the models volume read-write" \
        "(or run with --user matching its owner)" >&2
    exit 2
fi
python -m training train --artifacts-dir "$ARTIFACTS_DIR" --model "$MODEL" "$@"
set -- --artifacts-dir "$ARTIFACTS_DIR" --models-dir "$MODELS_DIR" --model "$MODEL"
if [ -n "${EXPORT_VERSION:-}" ]; then
    set -- "$@" --version "$EXPORT_VERSION"
fi
exec python -m training export "$@"
