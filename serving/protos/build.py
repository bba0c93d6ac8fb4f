"""Regenerate ``tfs_apis.binpb``: TF Serving's protos as one FileDescriptorSet.

Runs where ``tensorflow-serving-api`` (and so tensorflow) is installed; the gateway and the
clients then build the same message classes from this file without importing tensorflow.
Usage: ``python -m serving.protos.build [--check]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

DESCRIPTOR_SET = Path(__file__).with_name("tfs_apis.binpb")

# The modules whose files (and every file they depend on) the gateway and clients need.
API_MODULES = (
    "tensorflow_serving.apis.prediction_service_pb2",
    "tensorflow_serving.apis.model_service_pb2",
    "tensorflow_serving.apis.prediction_log_pb2",
)


def build_descriptor_set() -> bytes:
    """Serialize the transitive closure of API_MODULES' files, dependencies first."""
    import importlib

    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def visit(file_descriptor) -> None:
        if file_descriptor.name in seen:
            return
        seen.add(file_descriptor.name)
        for dependency in file_descriptor.dependencies:
            visit(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file_descriptor.CopyToProto(proto)
        ordered.append(proto)

    for module_name in API_MODULES:
        visit(importlib.import_module(module_name).DESCRIPTOR)
    file_set = descriptor_pb2.FileDescriptorSet(file=ordered)
    return file_set.SerializeToString(deterministic=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    fresh = build_descriptor_set()
    if args.check:
        if DESCRIPTOR_SET.exists() and DESCRIPTOR_SET.read_bytes() == fresh:
            return 0
        print(f"{DESCRIPTOR_SET} is stale: run `make protos`", file=sys.stderr)
        return 1
    DESCRIPTOR_SET.write_bytes(fresh)
    print(f"wrote {DESCRIPTOR_SET} ({len(fresh)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
