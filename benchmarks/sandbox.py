"""Sandbox benchmark: per-run overhead of the current default mode against the previous default.

Usage: python benchmarks/sandbox.py [--runs 20] [--baseline-ref 3d6c055]

The previous sandbox (the one issue 10 escaped: namespaces over the host's read-only tree, no seccomp
filter of its own) is taken from git at --baseline-ref and run from a temporary copy, in the same process
and on the same machine as the current one, runs interleaved so load changes hit both alike. Each run is a
whole `run_python` call (fresh interpreter, namespaces, root, filter, cleanup) of a tiny program, so the
time is the sandbox's own overhead. Printed: median and p90 per mode, and the ratio current/previous.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, pct  # noqa: E402
from services.sandbox import SandboxLimits, run_python  # noqa: E402

PROGRAM = "import json\nprint(json.dumps(sum(range(1000))))"


def load_previous(ref: str, into: Path):  # type: ignore[no-untyped-def]
    """The sandbox package as of `ref`, importable as `sandbox_prev` (its imports rewritten)."""
    pkg = into / "sandbox_prev"
    pkg.mkdir()
    names = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", f"{ref}:services/sandbox"],
                           capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:services/sandbox/{name}"],
                                  capture_output=True, text=True, check=True).stdout
            (pkg / name).write_text(text.replace("services.sandbox", "sandbox_prev"))
    sys.path.insert(0, str(into))
    return importlib.import_module("sandbox_prev")


async def timed(run, limits) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = await run(PROGRAM, limits=limits)
    elapsed = time.perf_counter() - started
    if result.status != "ok":
        raise SystemExit(f"benchmark run failed: {result}")
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs per mode (default 20)")
    parser.add_argument("--baseline-ref", default="3d6c055", help="git ref of the previous sandbox")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prev = load_previous(args.baseline_ref, Path(tmp))
        modes = {
            "previous default": (prev.run_python, prev.SandboxLimits()),
            "current default": (run_python, SandboxLimits()),
            "current, no seccomp filter": (run_python, SandboxLimits(seccomp=False)),
            "current weak (hooks-only, opted in)": (run_python, SandboxLimits(isolation="hooks-only", allow_weak=True)),
        }
        isolation = {name: (await run(PROGRAM, limits=limits)).isolation for name, (run, limits) in modes.items()}
        times: dict[str, list[float]] = {name: [] for name in modes}
        for i in range(args.runs):  # interleaved
            for name, (run, limits) in modes.items():
                times[name].append(await timed(run, limits))
            print(f"\rrun {i + 1}/{args.runs}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    print(f"sandbox per-run wall time, {args.runs} runs per mode, program: {PROGRAM!r}")
    for name, values in times.items():
        p90 = pct(values, 0.9)
        print(f"  {name:38s} [{isolation[name]:10s}] median {statistics.median(values) * 1000:7.1f} ms"
              f"  p90 {p90 * 1000:7.1f} ms")
    base = statistics.median(times["previous default"])
    ratio = statistics.median(times["current default"]) / base
    print(f"ratio current default / previous default (median): {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
