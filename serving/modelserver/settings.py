"""Command-line flags of the local model server, read once. Names and defaults follow
TF Serving's ``tensorflow_model_server`` where it has the flag; ``--models_root`` and
``--host`` are local additions."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from serving.cli_args import OneLineParser, float_in_range, int_in_range


@dataclass(frozen=True)
class Settings:
    model_config_file: Path
    port: int
    rest_api_port: int
    host: str
    models_root: Path | None
    enable_batching: bool
    batching_parameters_file: Path | None
    monitoring_config_file: Path | None
    file_system_poll_wait_seconds: float
    model_config_file_poll_wait_seconds: float
    allow_version_labels_for_unavailable_models: bool
    enable_model_warmup: bool
    grpc_max_threads: int
    rest_api_num_threads: int
    intra_op_parallelism: int
    inter_op_parallelism: int


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


INT32_MAX = 2**31 - 1  # TensorFlow's ConfigProto thread counts are int32
_PORT = int_in_range(0, 65535)
_SECONDS = float_in_range(0, what="seconds")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m serving.modelserver",
        description="Local TF Serving-compatible model server (gRPC + REST).",
    )
    flag = p.add_argument
    flag("--model_config_file", type=Path, required=True, help="ModelServerConfig text proto")
    flag("--port", type=_PORT, default=8500, help="gRPC port (default 8500)")
    flag("--rest_api_port", type=_PORT, default=8501, help="REST port; 0 disables REST")
    flag("--host", default="0.0.0.0", help="address to bind both ports (default 0.0.0.0)")  # noqa: S104
    flag(
        "--models_root",
        type=Path,
        default=None,
        help="replaces a leading /models of every base_path (local runs)",
    )
    # TF Serving's boolean flags accept --flag, --flag=true and --flag=false.
    for name, default in (
        ("--enable_batching", False),
        ("--allow_version_labels_for_unavailable_models", False),
        ("--enable_model_warmup", True),
    ):
        flag(name, type=_bool, nargs="?", const=True, default=default)
    flag("--batching_parameters_file", type=Path, default=None)
    flag("--monitoring_config_file", type=Path, default=None)
    flag(
        "--file_system_poll_wait_seconds",
        type=_SECONDS,
        default=1.0,
        help="seconds between scans of the base paths; 0 scans only at start (default 1)",
    )
    flag(
        "--model_config_file_poll_wait_seconds",
        type=_SECONDS,
        default=0.0,
        help="seconds between re-reads of --model_config_file; 0 never (default)",
    )
    flag(
        "--grpc_max_threads",
        type=int_in_range(1, INT32_MAX),
        default=32,
        help="gRPC handler threads (default 32)",
    )
    flag(
        "--rest_api_num_threads",
        type=int_in_range(1, INT32_MAX),
        default=16,
        help="REST handler threads",
    )
    flag(
        "--tensorflow_intra_op_parallelism",
        dest="intra_op_parallelism",
        type=int_in_range(0, INT32_MAX),
        default=0,
        help="TF intra-op threads; 0 lets TensorFlow choose",
    )
    flag(
        "--tensorflow_inter_op_parallelism",
        dest="inter_op_parallelism",
        # TensorFlow's ConfigProto: a negative inter-op count runs every op in the caller's
        # thread (valid, unlike a negative intra-op count, which aborts the process).
        type=int_in_range(-INT32_MAX - 1, INT32_MAX),
        default=0,
        help="TF inter-op threads; 0 lets TensorFlow choose, negative runs ops in the caller",
    )
    return p


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Parse flags; exits 2 with one line naming the bad flag, as CLIs should."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.port == 0:
        parser.error("--port must be a port number (gRPC cannot be disabled)")
    return Settings(**vars(args))
