"""Solve one problem with the agent team and watch the discussion live.

Publishes the problem to the bus (the stack must be running: `conclave up`), prints each event as it
happens (decisions, experts, every agent message with its tokens, verdicts), then the final answer
with tokens by role and wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from services.bus.address import nats_url_from_env
from services.protocol import kinds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the problem statement (or @FILE to read it from a file)")
    p.add_argument("--profile", default="", help="profile name (math500, aime2024, humaneval, mbpp, gpqa, business, open)")
    p.add_argument("--kind", choices=[*kinds.NAMES, *kinds.SHORT_NAMES], default="", help="problem kind (default: from the profile, else math)")
    p.add_argument("--single", action="store_true", help="single-agent baseline: one call per turn, no CEO/critics")
    p.add_argument("--id", default="", help="problem id (default: a fresh one)")
    p.add_argument("--reference", default="", help="reference answer, to grade the result")
    p.add_argument("--max-tokens", type=int, default=0, help="token ceiling for the whole discussion")
    p.add_argument("--max-turns", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the result")
    p.add_argument("--quiet", action="store_true", help="no live view, only the result")
    p.add_argument("--nats-url", default=nats_url_from_env())


def build_problem(args: argparse.Namespace):
    from conclave.v1 import problem_pb2
    from services.protocol import profile as profiles

    text = args.text
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as f:
            text = f.read()
    kind = args.kind or (profiles.load(args.profile).kind if args.profile else "math")
    p = problem_pb2.Problem(id=args.id or f"cli-{uuid.uuid4().hex[:12]}", kind=kinds.kind_value(kind), text=text,
                            profile=args.profile, reference_answer=args.reference, single_agent=args.single)
    p.limits.max_total_tokens = args.max_tokens
    p.limits.max_turns = args.max_turns
    return p


async def _solve(args: argparse.Namespace) -> int:
    from rich.console import Console

    from services.cli.render import print_result, render_event
    from services.client.connect import connect
    from services.client.solve import solve

    console = Console()
    problem = build_problem(args)
    try:
        nc = await connect(args.nats_url, state_dir=getattr(args, "state_dir", None), connect_timeout=3, max_reconnect_attempts=3)
    except Exception as exc:
        console.print(f"[red]cannot reach NATS at {args.nats_url}: {exc}. Is the stack up (`conclave up`)?[/red]")
        return 1
    console.print(f"[bold]problem {problem.id}[/bold] ({'single agent' if problem.single_agent else 'agent team'})")
    try:
        result = await solve(nc, problem, on_event=None if args.quiet else (lambda ev: render_event(console, ev)),
                             timeout_s=args.timeout)
    except TimeoutError:
        console.print(f"[red]no result within {args.timeout:.0f}s[/red]")
        return 1
    finally:
        await nc.close()
    print_result(console, result)
    return 0 if result.status == "ok" else 1


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_solve(args))
