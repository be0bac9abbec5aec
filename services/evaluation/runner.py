"""`conclave eval`: publish a benchmark to the bus, collect and grade the results, write a report.

Resumable: every graded problem is a line in OUT/results.jsonl, and a rerun skips the ids already
there. Problem ids are scoped to one run (OUT/run.json holds its id, model and revision): a resumed run
keeps its ids, so a problem interrupted mid-run is not solved twice (its result is picked up from the
RESULTS stream if it finished meanwhile), while a fresh run (`open_run(..., rerun=True)`, a new OUT, or
a model change) gets new ids, so the RESULTS stream never hands it another run's answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from nats.aio.client import Client

from conclave.v1 import agents_pb2, outcome_pb2
from services.bus import subjects, topology
from services.bus.lookup import last_message
from services.client.solve import solve
from services.evaluation.graders import grade_choice, grade_code, grade_math
from services.evaluation.loaders import BenchItem
from services.evaluation.problems import item_to_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    benchmark: str
    mode: str = "mas"  # "mas", "single" or "vote" (single sampled K times, services/evaluation/vote.py)
    profile: str = ""
    limit: int = 0
    concurrency: int = 4
    timeout_s: float = 3600.0
    # Overrides along the paper's scaling axes (0 = the profile's value); carried in problem metadata.
    max_turns: int = 0
    critic_rounds: int = 0
    team_size: int = 0
    k_cap: int = 0
    # Code benchmarks: "model", the executor writes its own tests and the team never sees the grading
    # tests (the paper's setting, and the fair one against a single agent); "dataset", the executor runs
    # the grading tests themselves, so the evaluator sees their outcome before the grader does.
    executor_tests: str = "model"
    # Accept a code turn only when the executor's tests pass too (profile.require_passing_tests).
    require_passing_tests: bool = False
    # Which half of the benchmark's fixed split (benchmarks/splits/) ran; "" = all of it.
    split: str = ""
    # The model and revision that answered (recorded in run.json and the report; the bus does not know).
    model: str = ""
    revision: str = ""
    # One run's scope for problem ids (set by open_run); "" keeps ids stable across runs (tests only).
    run_id: str = ""

    def tag(self) -> str:
        scoped_out = {"limit": 0, "concurrency": 0, "timeout_s": 0, "run_id": "", "model": "", "revision": ""}
        key = json.dumps(asdict(self) | scoped_out, sort_keys=True)
        return hashlib.blake2b(key.encode(), digest_size=4).hexdigest()

    def id_prefix(self) -> str:
        run = f"{self.run_id}-" if self.run_id else ""
        return f"{self.benchmark}-{self.mode}-{self.tag()}-{run}"

    def overrides(self) -> dict[str, str]:
        out = {}
        if self.critic_rounds:
            out["profile.critic_rounds"] = str(self.critic_rounds)
        if self.team_size:
            out["profile.n_min"] = out["profile.n_cap"] = str(self.team_size)
        if self.k_cap:
            out["profile.k_cap"] = str(self.k_cap)
        if self.require_passing_tests:
            out["profile.require_passing_tests"] = "true"
        return out


@dataclass
class Graded:
    id: str
    problem_id: str
    correct: bool
    extracted: str
    stop_reason: str
    turns: int
    total_tokens: int
    tokens_by_role: dict[str, int]
    wall_s: float
    consensus: bool
    decisions: list[dict] = field(default_factory=list)
    fallbacks: int = 0
    grade_note: str = ""


async def grade(item: BenchItem, result: outcome_pb2.Result) -> tuple[bool, str]:
    answer = result.answer
    if result.status != "ok" or not answer:
        return False, result.error.message or "no answer"
    if item.kind == "math":
        return grade_math(answer, str(item.reference_answer)), ""
    if item.kind == "multiple_choice":
        return grade_choice(answer, item.correct_letter or ""), ""
    if item.kind == "code":
        g = await grade_code(answer, tests=item.tests or "", entry_point=item.entry_point or "",
                             test_setup=item.test_setup, stub=item.stub or "")
        return g.passed, g.status
    return False, "open-ended answers are not graded"


async def trajectory_of(nc: Client, problem_id: str, *, attempts: int = 3, timeout_s: float = 10.0,
                        backoff_s: float = 1.0) -> outcome_pb2.Trajectory | None:
    """The problem's stored trajectory (for the CEO's decisions in results.jsonl), or None. A JetStream too
    busy to answer (seen on the GPU: a vote of 64 problems × 32 samples) is asked again, then gone without:
    the graded result stands, only its decisions list is empty; it never ends the run."""
    try:
        raw = await last_message(nc.jetstream(timeout=timeout_s), topology.TRAJECTORIES,
                                 subjects.trajectory(problem_id), attempts=attempts, backoff_s=backoff_s)
    except TimeoutError:
        log.warning("trajectory of %s: JetStream did not answer in %d tries of %.0fs; graded without it",
                    problem_id, attempts, timeout_s)
        return None
    return outcome_pb2.Trajectory.FromString(raw.data) if raw is not None else None


class RunMismatch(ValueError):
    """OUT holds a run of another model or revision; resuming it would mix two models' answers."""


def open_run(out_dir: Path, settings: RunSettings, *, rerun: bool = False) -> RunSettings:
    """Settings scoped to one run: OUT/run.json's run when resuming, a new run id when `rerun` or new.

    A rerun moves the earlier results aside (results.RUNID.jsonl), so nothing of them is reused.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path, results_path = out_dir / "run.json", out_dir / "results.jsonl"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else None
    if meta is not None and not rerun:
        if (meta.get("model", ""), meta.get("revision", "")) != (settings.model, settings.revision):
            raise RunMismatch(
                f"{out_dir} holds a run of model {meta.get('model') or '?'} revision {meta.get('revision') or '?'}, "
                f"not {settings.model or '?'} {settings.revision or '?'}: pass --rerun or another --out")
        return replace(settings, run_id=meta["run_id"])
    if results_path.exists():
        old = (meta or {}).get("run_id") or "earlier"
        results_path.rename(out_dir / f"results.{old}.jsonl")
    run_id = secrets.token_hex(4)
    meta_path.write_text(json.dumps({"run_id": run_id, "model": settings.model, "revision": settings.revision,
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2),
                         encoding="utf-8")
    return replace(settings, run_id=run_id)


def load_done(path: Path) -> dict[str, Graded]:
    done: dict[str, Graded] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                g = Graded(**json.loads(line))
                done[g.id] = g
    return done


async def run_eval(
    nc: Client, items: list[BenchItem], settings: RunSettings, out_dir: Path,
    progress: Callable[[Graded | None, int, int], None] | None = None,
    solver: Callable[..., Awaitable[outcome_pb2.Result]] = solve,
    stall_warn_s: float = 120.0,
) -> list[Graded]:
    """`solver` answers one problem (default: the team or single agent; vote.VoteSolver for --mode vote).
    When no problem finishes for `stall_warn_s` while some are in flight, a WARNING names the longest waits."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.jsonl"
    items = items[: settings.limit] if settings.limit else items
    done = load_done(results_path)
    todo = [i for i in items if i.id not in done]
    slots = asyncio.Semaphore(max(1, settings.concurrency))
    lock = asyncio.Lock()
    prefix = settings.id_prefix()
    if progress:
        progress(None, len(items) - len(todo), len(items))

    in_flight: dict[str, float] = {}  # item id -> when its problem was submitted

    async def one(item: BenchItem) -> None:
        async with slots:
            in_flight[item.id] = time.monotonic()
            problem = item_to_problem(item, profile=settings.profile, single_agent=settings.mode == "single",
                                      prefix=prefix, max_turns=settings.max_turns,
                                      with_tests=settings.executor_tests == "dataset")
            for key, value in settings.overrides().items():
                problem.metadata[key] = value
            started = time.monotonic()
            try:
                result = await solver(nc, problem, timeout_s=settings.timeout_s)
            except TimeoutError:
                result = outcome_pb2.Result(problem_id=problem.id, status="error", stop_reason="timeout",
                                            wall_s=time.monotonic() - started)
            ok, note = await grade(item, result)
            traj = await trajectory_of(nc, problem.id)
            decisions = [
                {"turn": d.turn, "action": agents_pb2.CeoDecision.Action.Name(d.action).removeprefix("ACTION_").lower(),
                 "n": d.recruit_number, "k": d.max_tokens, "fallback": d.fallback}
                for d in (traj.decisions if traj else [])
            ]
            graded = Graded(
                id=item.id, problem_id=problem.id, correct=ok, extracted=result.extracted_answer[:500],
                stop_reason=result.stop_reason, turns=result.turns, total_tokens=result.total_tokens,
                tokens_by_role={agents_pb2.Role.Name(t.role).removeprefix("ROLE_").lower():
                                t.prompt_tokens + t.completion_tokens for t in result.tokens},
                wall_s=result.wall_s, consensus=result.consensus, decisions=decisions,
                fallbacks=result.fallbacks, grade_note=note,
            )
            async with lock:
                with results_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(asdict(graded)) + "\n")
                done[item.id] = graded
                in_flight.pop(item.id, None)
                if progress:
                    progress(graded, len(done), len(items))

    async def watch() -> None:
        # A problem that never comes back is otherwise silent until its timeout (an hour by default).
        seen = len(done)
        while True:
            await asyncio.sleep(stall_warn_s)
            if len(done) == seen and in_flight:
                now = time.monotonic()
                longest = sorted(in_flight.items(), key=lambda kv: kv[1])[:5]
                log.warning("no problem finished in the last %g s; %d in flight, the longest waits: %s",
                            stall_warn_s, len(in_flight),
                            ", ".join(f"{pid} {now - since:.0f} s" for pid, since in longest))
            seen = len(done)

    # A TaskGroup: when one problem fails (or the user interrupts), the others are cancelled, and what
    # was graded so far is already on disk for the rerun.
    watcher = asyncio.create_task(watch())
    try:
        async with asyncio.TaskGroup() as group:
            for item in todo:
                group.create_task(one(item))
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return [done[i.id] for i in items if i.id in done]
