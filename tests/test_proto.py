"""The generated protobuf code in proto/ must match the .proto files (run `make proto` after editing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PROTO_DIR = REPO / "proto"


def test_generated_code_is_not_stale(tmp_path: Path):
    subprocess.run([sys.executable, str(REPO / "proto" / "generate.py"), "--out", str(tmp_path)], check=True)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    committed = sorted(p.relative_to(PROTO_DIR) for p in PROTO_DIR.rglob("*_pb2*.py*"))
    assert fresh == committed, "generated files differ in name: run `make proto`"
    stale = [str(p) for p in fresh if (tmp_path / p).read_bytes() != (PROTO_DIR / p).read_bytes()]
    assert not stale, f"stale generated code, run `make proto`: {stale}"
