"""The sequence of `run` calls that carries a prepared stage to the GPU machine and then drives the pipeline.

Pure logic (no device, no network), so CI tests it: given the manifest that prepare.py wrote and the size
of the working tree that travels with every call, it packs the parts into calls that each stay under the
per-call limit, orders them so the model arrives first (its conversion runs in the background while the
vLLM bundle travels), and appends the pipeline calls. Each call is {carry, command, note}; print them with

    python benchmarks/gpu/plan.py --stage .gpuw --tree-bytes 2500000

and issue them back to back (a machine goes back 30 s after a call ends, and /tmp with it).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MIB = 1 << 20
CALL_LIMIT = 64 * MIB  # what one call may carry, working tree included
MAX_CARRY = 8  # paths named in carry
MAX_COMMAND = 2000  # characters of one command
# Artifacts in the order they should arrive: the model and our wheels (gguf) first, so that the model
# converts while vLLM travels; the wheels fill the room the model's last part leaves.
ORDER = ("model", "wheels", "vllm")
DRIVER = "python3 {stage}/proj/benchmarks/gpu/device/gpurun.py --stage {stage}"


class PlanError(ValueError):
    """The stage cannot travel as asked (a part too big for one call, an unknown artifact)."""


@dataclass(frozen=True)
class Call:
    carry: list[str]
    command: str
    note: str
    carried_bytes: int = 0


@dataclass
class Stage:
    """What prepare.py wrote: part files per artifact, and the always-carried files (driver, manifest)."""

    root: str  # the stage dir, relative to the repo root that travels
    parts: dict[str, list[tuple[str, int]]]  # artifact -> [(path relative to repo root, bytes)]
    always: list[tuple[str, int]] = field(default_factory=list)  # carried in every call

    @classmethod
    def from_manifest(cls, stage: Path, root: str) -> Stage:
        doc = json.loads((stage / "manifest.json").read_text(encoding="utf-8"))
        parts = {name: [(f"{root}/{p['path']}", p["bytes"]) for p in art["parts"]]
                 for name, art in doc["artifacts"].items()}
        always = [(f"{root}/{a['path']}", a["bytes"]) for a in doc["always"]]
        return cls(root=root, parts=parts, always=always)


def transfer_calls(stage: Stage, tree_bytes: int, limit: int = CALL_LIMIT) -> list[Call]:
    """Parts packed greedily, in ORDER, into calls that carry the always-files too; each call stashes."""
    unknown = set(stage.parts) - set(ORDER)
    if unknown:
        raise PlanError(f"unknown artifacts {sorted(unknown)}; known: {', '.join(ORDER)}")
    fixed = tree_bytes + sum(b for _, b in stage.always)
    room = limit - fixed
    queue = [(name, path, size) for name in ORDER for path, size in stage.parts.get(name, [])]
    calls: list[Call] = []
    command = DRIVER.format(stage=stage.root) + " stash"
    while queue:
        batch: list[tuple[str, str, int]] = []
        used = 0
        while queue and used + queue[0][2] <= room and len(batch) + len(stage.always) < MAX_CARRY:
            batch.append(queue.pop(0))
            used += batch[-1][2]
        if not batch:
            name, path, size = queue[0]
            raise PlanError(f"{path} ({size / MIB:.1f} MiB) does not fit a call beside {fixed / MIB:.1f} MiB "
                            f"of working tree and always-carried files (limit {limit / MIB:.0f} MiB)")
        names = sorted({n for n, _, _ in batch}, key=ORDER.index)
        calls.append(Call(carry=[p for p, _ in stage.always] + [p for _, p, _ in batch], command=command,
                          note=f"parts of {', '.join(names)}", carried_bytes=fixed + used))
    return calls


def pipeline_calls(stage: Stage, tree_bytes: int, calls: int, deadline_s: int = 540) -> list[Call]:
    """The same resumable command, repeated: each call advances the pipeline until its deadline."""
    command = DRIVER.format(stage=stage.root) + f" go --deadline-s {deadline_s}"
    fixed = tree_bytes + sum(b for _, b in stage.always)
    return [Call(carry=[p for p, _ in stage.always], command=command, note=f"pipeline, call {i + 1}",
                 carried_bytes=fixed) for i in range(calls)]


def plan(stage: Stage, tree_bytes: int, pipeline: int = 4, limit: int = CALL_LIMIT, deadline_s: int = 540) -> list[Call]:
    """Transfers, then the pipeline; the last transfer call already starts the pipeline (one call fewer)."""
    transfers = transfer_calls(stage, tree_bytes, limit)
    go = pipeline_calls(stage, tree_bytes, pipeline, deadline_s)
    if transfers and go:
        last = transfers.pop()
        transfers.append(Call(carry=last.carry, command=go[0].command, note=last.note + ", then the pipeline",
                              carried_bytes=last.carried_bytes))
        go = go[1:]
    out = transfers + go
    for call in out:
        if len(call.command) > MAX_COMMAND:
            raise PlanError(f"command longer than {MAX_COMMAND} characters: {call.command[:80]}…")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu/plan.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=Path, default=Path(".gpuw"), help="the stage dir prepare.py wrote")
    p.add_argument("--root", default="", help="the stage's path relative to the repo that travels (default --stage)")
    p.add_argument("--tree-bytes", type=int, required=True, help="size of the working tree that travels anyway")
    p.add_argument("--pipeline-calls", type=int, default=4)
    args = p.parse_args(argv)
    stage = Stage.from_manifest(args.stage, args.root or str(args.stage))
    calls = plan(stage, args.tree_bytes, args.pipeline_calls)
    for i, call in enumerate(calls, 1):
        print(json.dumps({"call": i, **asdict(call)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
