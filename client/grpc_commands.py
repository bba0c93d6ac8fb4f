"""``python -m client grpc ...``: TF Serving's gRPC API through ``serving.tfs_client``.

Works unchanged against TensorFlow Serving and the local model server (same protocol).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from client import inputs, output
from client.errors import EXIT_REJECTED, EXIT_UNAVAILABLE, EXIT_USAGE, ClientError
from client.housing import card_for_version, card_from_path, split_features
from serving import tfs_client


@contextmanager
def connected(args: argparse.Namespace) -> Iterator[tfs_client.TFServingClient]:
    """One client (one channel) for the command; backend errors become ClientErrors."""
    try:
        client = tfs_client.TFServingClient(args.server, timeout=args.timeout)
    except ValueError as exc:  # e.g. a malformed target
        raise ClientError(f"--server {args.server}: {exc}", EXIT_USAGE) from None
    try:
        yield client
    except tfs_client.BackendError as exc:
        raise backend_error(exc, args.server) from None
    finally:
        client.close()


def backend_error(exc: tfs_client.BackendError, server: str) -> ClientError:
    # The messages of DeadlineExceeded/BackendUnavailable already name the server.
    if isinstance(exc, tfs_client.ModelNotFound | tfs_client.InvalidRequest):
        return ClientError(f"{server} refused the request: {exc}", EXIT_REJECTED)
    if isinstance(exc, tfs_client.DeadlineExceeded | tfs_client.BackendUnavailable):
        return ClientError(str(exc), EXIT_UNAVAILABLE)
    return ClientError(f"{server}: server error: {exc}", EXIT_UNAVAILABLE)


def _selector(args: argparse.Namespace) -> dict[str, Any]:
    return {"version": args.version, "label": args.label}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def cmd_predict(args: argparse.Namespace) -> None:
    batch = inputs.image_batch(args)
    class_ids: list[int] = []
    class_names: list[str] = []
    probabilities: list[list[float]] = []
    version = None
    with connected(args) as client:
        for start in range(0, len(batch.images), args.batch_size):
            chunk = batch.images[start : start + args.batch_size]
            result = client.predict(args.model, {"images": chunk}, **_selector(args))
            version = result.version
            if args.version is None and args.label is None:
                # Pin the version the server chose so a reload mid-command cannot mix versions.
                args.version = version
            probs = np.asarray(result.outputs["probabilities"], dtype=np.float64)
            ids = result.outputs.get("class_ids")
            ids = probs.argmax(axis=1) if ids is None else np.asarray(ids)
            names = result.outputs.get("class_names")
            class_ids.extend(int(i) for i in ids)
            class_names.extend(
                _text(n) for n in (names if names is not None else [str(i) for i in ids])
            )
            probabilities.extend(probs.round(6).tolist())
    output.show_image_predictions(
        output.ImagePredictions(
            model=args.model,
            version=version,
            sources=batch.sources,
            class_ids=class_ids,
            class_names=class_names,
            probabilities=probabilities,
            true_ids=None if batch.true_labels is None else batch.true_labels.tolist(),
            true_names=inputs.true_names(batch),
        ),
        as_json=args.json,
    )


def cmd_housing(args: argparse.Namespace) -> None:
    rows = inputs.feature_rows(args)
    with connected(args) as client:
        if args.model_card:
            card = card_from_path(args.model_card)
            selector = _selector(args)
        else:
            # The card must be the one of the version that will answer: resolve the requested
            # version/label (or the server's default) to a number, then pin it.
            meta = client.metadata(args.model, **_selector(args))
            version = int(meta["model_spec"]["version"])
            card = card_for_version(args.models_dir, args.model, version)
            selector = {"version": version, "label": None}
        tensors = split_features(
            card, rows, "--features" if args.features is not None else str(args.csv)
        )
        main: list[float] = []
        aux: list[float] = []
        version = None
        for start in range(0, len(rows), args.batch_size):
            chunk = {k: v[start : start + args.batch_size] for k, v in tensors.items()}
            result = client.predict(args.model, chunk, **selector)
            version = result.version
            main.extend(float(x) for x in np.asarray(result.outputs["main"]).reshape(-1))
            if "aux" in result.outputs:
                aux.extend(float(x) for x in np.asarray(result.outputs["aux"]).reshape(-1))
    output.show_housing_predictions(
        output.HousingPredictions(
            model=args.model,
            version=version,
            rows=rows,
            main=main,
            aux=aux,
            target=str(card.get("target", "prediction")),
        ),
        as_json=args.json,
    )


def cmd_metadata(args: argparse.Namespace) -> None:
    with connected(args) as client:
        meta = client.metadata(args.model, **_selector(args))
    if args.json:
        output.print_json(meta)
        return
    spec = meta.get("model_spec", {})
    print(f"model {spec.get('name', args.model)}, version {spec.get('version')}")
    for name, signature in sorted(meta.get("signature_def", {}).items()):
        if name.startswith("__"):
            continue  # internal ones such as __saved_model_init_op (kept in --json)
        print(f"signature {name} ({signature.get('method_name', '')})")
        rows = []
        for kind in ("inputs", "outputs"):
            for tensor_name, info in sorted(signature.get(kind, {}).items()):
                rows.append([kind[:-1], tensor_name, _dtype(info), _shape(info)])
        print(output.format_table(["kind", "name", "dtype", "shape"], rows))


def _dtype(info: dict[str, Any]) -> str:
    return str(info.get("dtype", "?")).removeprefix("DT_").lower()


def _shape(info: dict[str, Any]) -> str:
    shape = info.get("tensor_shape", {})
    if shape.get("unknown_rank"):
        return "unknown"
    dims = [str(d.get("size", "-1")) for d in shape.get("dim", [])]
    return "[" + ", ".join(dims) + "]"


def cmd_status(args: argparse.Namespace) -> None:
    with connected(args) as client:
        versions = client.status(args.model, **_selector(args))
    if args.json:
        output.print_json({"model": args.model, "model_version_status": versions})
        return
    print(f"model {args.model}")
    rows = [
        [
            str(v["version"]),
            str(v["state"]),
            str(v.get("error_code", "")),
            str(v.get("error_message", "")),
        ]
        for v in versions
    ]
    print(output.format_table(["version", "state", "error_code", "error_message"], rows))
