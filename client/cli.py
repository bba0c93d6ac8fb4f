"""Argument parsing and error handling of ``python -m client``.

    python -m client grpc predict --server localhost:8500 shoe.png
    python -m client grpc predict --test-images 20 --seed 1
    python -m client grpc housing --features MedInc=8.3,HouseAge=41,...
    python -m client grpc metadata --model housing
    python -m client grpc status --model fashion_mnist
    python -m client http predict --url http://localhost:8000 shoe.png
    python -m client http housing --csv rows.csv

Configuration: flags, with defaults from the environment read here once:
``MODEL_SERVER_GRPC`` (default ``localhost:8500``), ``GATEWAY_URL`` (``http://localhost:8000``),
``MODEL_CARDS_DIR`` (``models``), ``GATEWAY_API_KEY`` (none: for a gateway with API keys).
Exit codes are in ``client.errors`` and docs/clients.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from client.errors import EXIT_INTERNAL, EXIT_OK, ClientError
from serving.cli_args import OneLineParser, float_in_range, int_in_range

DEFAULT_GRPC = os.environ.get("MODEL_SERVER_GRPC", "localhost:8500")
DEFAULT_URL = os.environ.get("GATEWAY_URL", "http://localhost:8000")
DEFAULT_MODELS_DIR = os.environ.get("MODEL_CARDS_DIR", "models")
#: Sent as ``Authorization: Bearer`` when set; from the environment only, never a flag, so the
#: key stays out of shell history and process listings.
API_KEY = os.environ.get("GATEWAY_API_KEY") or None
DEFAULT_TIMEOUT = 10.0
DEFAULT_BATCH = 100


#: TF Serving's versions are int64; a larger --version cannot be sent.
MAX_VERSION = 2**63 - 1
#: Plain gRPC targets are HOST:PORT; these URI schemes (gRPC naming) are passed on unchanged.
_GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def _grpc_target(text: str) -> str:
    """HOST:PORT (or [IPv6]:PORT) with a port 1..65535; gRPC would otherwise wrap a port such as
    70000 to another one, or use 443 when it is missing. Targets with a gRPC URI scheme
    (``dns:``, ``unix:``, ...) are left to gRPC."""
    target = text.strip()
    if target.lower().startswith(_GRPC_SCHEMES):
        return target
    host, sep, port = target.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or any(c.isspace() for c in host):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a port 1..65535, got {text!r}")
    return target


def _common(*, grpc: bool) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    if grpc:
        common.add_argument(
            "--server",
            type=_grpc_target,
            default=DEFAULT_GRPC,
            help=f"model server gRPC host:port (default $MODEL_SERVER_GRPC or {DEFAULT_GRPC})",
        )
    else:
        common.add_argument(
            "--url",
            default=DEFAULT_URL,
            help=f"gateway base URL (default $GATEWAY_URL or {DEFAULT_URL})",
        )
    common.add_argument(
        "--timeout",
        type=float_in_range(0, 1e6, above_minimum=True, what="seconds"),
        default=DEFAULT_TIMEOUT,
        help=f"deadline per request in seconds (default {DEFAULT_TIMEOUT:g})",
    )
    common.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    common.set_defaults(api_key=None if grpc else API_KEY)
    return common


def _model_selector(parser: argparse.ArgumentParser, default_model: str | None) -> None:
    """--model (gRPC only: the gateway routes to its configured models), --version | --label."""
    if default_model is not None:
        parser.add_argument(
            "--model", default=default_model, help=f"model name (default {default_model})"
        )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--version", type=int_in_range(1, MAX_VERSION), help="a specific model version"
    )
    which.add_argument("--label", help="a version label, e.g. stable or canary")


def _predict_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images", nargs="*", metavar="IMAGE", help="PNG/JPEG/... files or .npy arrays"
    )
    parser.add_argument(
        "--test-images",
        type=int_in_range(1),
        metavar="N",
        help="predict N random Fashion-MNIST test images and report the accuracy",
    )
    parser.add_argument("--seed", type=int_in_range(0), help="random seed for --test-images (>= 0)")
    parser.add_argument(
        "--data-dir",
        help="Fashion-MNIST IDX directory (default: $FASHION_MNIST_DIR, then the usual places)",
    )
    parser.add_argument(
        "--invert",
        choices=("auto", "always", "never"),
        default="auto",
        help="make images light-on-black like Fashion-MNIST (auto: when the border is light)",
    )
    parser.add_argument(
        "--batch-size",
        type=int_in_range(1),
        default=DEFAULT_BATCH,
        help=f"images per request (default {DEFAULT_BATCH})",
    )


def _housing_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--features", metavar="NAME=VALUE,...", help="the 8 features of one district"
    )
    source.add_argument(
        "--csv",
        metavar="FILE",
        help="CSV file: a header of the 8 feature names, one row per district",
    )
    parser.add_argument(
        "--batch-size",
        type=int_in_range(1),
        default=DEFAULT_BATCH,
        help=f"rows per request (default {DEFAULT_BATCH})",
    )


def build_parser() -> argparse.ArgumentParser:
    from client import grpc_commands, http_commands

    parser = OneLineParser(
        prog="python -m client", description="Clients of the model server and gateway."
    )
    protocols = parser.add_subparsers(dest="protocol", required=True, parser_class=OneLineParser)

    grpc_parser = protocols.add_parser(
        "grpc", help="TF Serving gRPC API (model server or TF Serving)"
    )
    grpc_cmds = grpc_parser.add_subparsers(
        dest="command", required=True, parser_class=OneLineParser
    )
    common = _common(grpc=True)
    p = grpc_cmds.add_parser("predict", parents=[common], help="classify images")
    _model_selector(p, "fashion_mnist")
    _predict_args(p)
    p.set_defaults(func=grpc_commands.cmd_predict)
    p = grpc_cmds.add_parser("housing", parents=[common], help="predict house values")
    _model_selector(p, "housing")
    _housing_args(p)
    card = p.add_mutually_exclusive_group()
    card.add_argument(
        "--models-dir",
        default=DEFAULT_MODELS_DIR,
        help="exported models dir holding the model cards (default $MODEL_CARDS_DIR or models)",
    )
    card.add_argument("--model-card", help="a model_card.json file or an exported version dir")
    p.set_defaults(func=grpc_commands.cmd_housing)
    for name, func, text in (
        ("metadata", grpc_commands.cmd_metadata, "signatures of a model version"),
        ("status", grpc_commands.cmd_status, "state of a model's versions"),
    ):
        p = grpc_cmds.add_parser(name, parents=[common], help=text)
        _model_selector(p, "fashion_mnist")
        p.set_defaults(func=func)

    http_parser = protocols.add_parser("http", help="the gateway's HTTP API")
    http_cmds = http_parser.add_subparsers(
        dest="command", required=True, parser_class=OneLineParser
    )
    common = _common(grpc=False)
    p = http_cmds.add_parser("predict", parents=[common], help="classify images (POST /predict)")
    _model_selector(p, None)
    _predict_args(p)
    p.add_argument(
        "--upload",
        action="store_true",
        help="send the image files as they are (multipart) for the gateway to convert, "
        "instead of converting them here and sending pixels",
    )
    p.set_defaults(func=http_commands.cmd_predict)
    p = http_cmds.add_parser(
        "housing", parents=[common], help="predict house values (POST /predict/housing)"
    )
    _model_selector(p, None)
    _housing_args(p)
    p.set_defaults(func=http_commands.cmd_housing)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `... | head`
        return EXIT_OK
    except Exception as exc:  # a bug: still one line, but say so
        print(f"error: internal client error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_OK
