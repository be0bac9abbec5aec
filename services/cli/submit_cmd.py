"""Publish a batch of problems from a JSONL file and write their results, with a progress bar.

Each line is a problem in the user JSONL schema (docs/problems.md): `id`, `kind` (math,
multiple_choice, code, open_ended), `text`, and optional `reference_answer`, `options`,
`correct_index`, `entry_point`, `tests`, `test_setup`, `metadata`. Results are written as JSON lines
(protobuf JSON of conclave.v1.Result) to --out. A rerun skips problems whose result is already in --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from services.bus.address import nats_url_from_env


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="problems, one JSON object per line")
    p.add_argument("--out", type=Path, default=None, help="results file (default: FILE.results.jsonl)")
    p.add_argument("--profile", default="", help="profile for every problem (default: by kind)")
    p.add_argument("--single", action="store_true", help="single-agent baseline")
    p.add_argument("--concurrency", type=int, default=8, help="problems in flight at once (default 8)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for each result")
    p.add_argument("--nats-url", default=nats_url_from_env())


def done_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    ids = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            ids.add(json.loads(line).get("problem_id", ""))
    return ids


async def _submit(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from services.cli.progress import progress
    from services.client.connect import connect
    from services.client.solve import solve
    from services.evaluation.loaders import DataError, load_jsonl
    from services.evaluation.problems import item_to_problem

    try:
        items = load_jsonl(args.file)
    except (DataError, OSError) as exc:
        print(f"conclave submit: {exc}")
        return 2
    out = args.out or args.file.with_suffix(".results.jsonl")
    skip = done_ids(out)
    todo = [i for i in items if i.id not in skip]
    nc = await connect(args.nats_url, connect_timeout=3)
    slots = asyncio.Semaphore(max(1, args.concurrency))
    failures = 0
    finished = len(items) - len(todo)
    with out.open("a", encoding="utf-8") as sink, progress("submit", len(items), finished) as view:

        async def one(item) -> None:
            nonlocal failures, finished
            async with slots:
                problem = item_to_problem(item, profile=args.profile, single_agent=args.single)
                try:
                    result = await solve(nc, problem, timeout_s=args.timeout)
                except TimeoutError:
                    failures += 1
                    finished += 1
                    view.update(finished, len(items), f"{item.id}: timeout")
                    return
                sink.write(json_format.MessageToJson(result, preserving_proto_field_name=True, indent=None) + "\n")
                sink.flush()
                failures += result.status != "ok"
                finished += 1
                view.update(finished, len(items), f"{item.id}: {result.stop_reason}")

        await asyncio.gather(*(one(i) for i in todo))
    await nc.close()
    print(f"{len(todo)} submitted, {len(skip)} already done, {failures} failed; results in {out}")
    return 1 if failures else 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_submit(args))
