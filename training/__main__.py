"""python -m training {train,export}: the command line; all flags are read here."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from serving.cli_args import OneLineParser, float_in_range, int_in_range

#: TF Serving's versions are int64.
MAX_VERSION = 2**63 - 1
#: keras.utils.set_random_seed seeds numpy, whose seeds are 0..2**32 - 1.
MAX_SEED = 2**32 - 1


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    models = ("fashion_mnist", "housing", "all")

    train = sub.add_parser("train", help="train models, write artifacts/<model>/")
    train.add_argument("--artifacts-dir", default="artifacts", help="default: %(default)s")
    train.add_argument("--model", choices=models, default="all", help="default: %(default)s")
    train.add_argument(
        "--epochs", type=int_in_range(1), help="default: 30 (fashion_mnist), 20 (housing)"
    )
    train.add_argument("--batch-size", type=int_in_range(1), default=32, help="default: 32")
    train.add_argument(
        "--learning-rate",
        type=float_in_range(0, above_minimum=True),
        help="SGD learning rate; default: per model",
    )
    train.add_argument(
        "--limit", type=int_in_range(1), help="use at most N examples of each split (quick runs)"
    )
    train.add_argument(
        "--seed", type=int_in_range(0, MAX_SEED), default=42, help="default: %(default)s"
    )
    train.add_argument(
        "--data-dir",
        help="Fashion-MNIST IDX directory; default: $FASHION_MNIST_DIR, "
        "~/.keras/datasets/fashion-mnist, /usr/share/datasets/fashion-mnist, then download",
    )
    train.add_argument(
        "--housing-data",
        help="cal_housing.tgz or cal_housing.data; default: $HOUSING_DATA, then scikit-learn",
    )
    train.add_argument("--quiet", action="store_true", help="no per-epoch progress")

    export = sub.add_parser("export", help="export trained models as TF Serving versions")
    export.add_argument("--artifacts-dir", default="artifacts", help="default: %(default)s")
    export.add_argument("--models-dir", default="models", help="default: %(default)s")
    export.add_argument("--model", choices=models, default="all", help="default: %(default)s")
    export.add_argument(
        "--version",
        type=int_in_range(1, MAX_VERSION),
        help="version number; default: next free one",
    )
    return parser


def _names(choice: str) -> tuple[str, ...]:
    return ("fashion_mnist", "housing") if choice == "all" else (choice,)


def run_train(args: argparse.Namespace) -> None:
    from training.train import TrainConfig, train_model

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        limit=args.limit,
        seed=args.seed,
        data_dir=args.data_dir,
        housing_data=args.housing_data,
        verbose=0 if args.quiet else 2,
    )
    for name in _names(args.model):
        print(f"[train] {name} ...", flush=True)
        start = time.monotonic()
        metrics = train_model(name, config, args.artifacts_dir)
        test = ", ".join(f"{k}={v:.4f}" for k, v in metrics["test"].items())
        print(
            f"[train] {name}: test {test}; {time.monotonic() - start:.0f} s; "
            f"artifacts in {os.path.join(args.artifacts_dir, name)}",
            flush=True,
        )


def run_export(args: argparse.Namespace) -> None:
    from pathlib import Path

    from training.export import ExportError, export_model
    from training.train import METRICS_FILE, MODEL_FILE, WARMUP_FILE

    names = _names(args.model)
    if Path(args.models_dir).exists() and not Path(args.models_dir).is_dir():
        raise ExportError(f"--models-dir {args.models_dir} is not a directory")
    # Missing artifacts are reported before the export imports TensorFlow (whose start-up
    # lines would otherwise come first on stderr); export_model checks them again.
    for name in names:
        for file in (MODEL_FILE, METRICS_FILE, WARMUP_FILE):
            path = Path(args.artifacts_dir) / name / file
            if not path.is_file():
                raise ExportError(f"{path} not found: run `python -m training train` first")
    if args.version is not None:
        # Check every model first so a clash never leaves half of the models exported.
        for name in names:
            target = Path(args.models_dir) / name / str(args.version)
            if target.exists():
                raise ExportError(
                    f"{target} already exists; existing versions are never overwritten"
                )
    for name in names:
        path = export_model(name, args.artifacts_dir, args.models_dir, args.version)
        print(f"[export] {name} -> {path}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ banner out of the logs
    from training.data import DataError
    from training.export import ExportError

    try:
        run_train(args) if args.command == "train" else run_export(args)
    except (DataError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. --artifacts-dir or --models-dir is a file, or not writable
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
