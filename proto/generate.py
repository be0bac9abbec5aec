"""Generates Python code and .pyi stubs from proto/conclave/v1/*.proto (grpcio-tools >= 1.85).

Usage: python proto/generate.py [--out DIR]   (default: next to the .proto files)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc
import grpc_tools

HERE = Path(__file__).resolve().parent
# Only these files define gRPC services; the rest are plain messages.
GRPC_FILES = {"inference.proto"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    protos = sorted((HERE / "conclave" / "v1").glob("*.proto"))
    for proto in protos:
        rel = str(proto.relative_to(HERE))
        args = ["protoc", f"-I{HERE}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}"]
        if proto.name in GRPC_FILES:
            args.append(f"--grpc_python_out={out}")
        if protoc.main([*args, rel]) != 0:
            print(f"protoc failed on {rel}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
