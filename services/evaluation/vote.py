"""Majority voting (self-consistency): the single agent sampled K times, the most common answer wins.

The honest baseline for a team: the cheapest way to spend a team's tokens is to ask one agent K times.
Each sample is an ordinary single-agent problem on the bus (id `<problem>-s<i>`), so the K calls of a
problem are independent requests the gateway's pods batch. Sample ids carry the run's id, so samples are
shared only within one run (a resumed run skips the samples it already has).

Answers are grouped into equivalence classes per task kind:
- math: the boxed answers, compared symbolically (math-verify, as the grader does);
- multiple choice: the option letter;
- code: the code's syntax tree with comments, formatting and docstrings ignored; when the samples differ,
  the class that passes most of the model's own tests wins (vote_code.py; the grading tests stay hidden);
- open-ended: the text with case and spacing ignored.
A sample with no extractable answer does not vote (its tokens still count). Ties go to the class whose
first member was sampled earliest, so a tie of singletons answers with sample 0 (what one call would
have answered). The representative of the winning class is its earliest sample, graded like any answer.

`k=0` ("auto") matches another run's tokens problem by problem: samples are drawn in waves until the
next one would overshoot the target by more than half a sample (at least one, at most `k_max`).
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import logging
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nats.aio.client import Client

from conclave.v1 import agents_pb2, outcome_pb2, problem_pb2
from services.evaluation import vote_code
from services.evaluation.graders import answers_match
from services.protocol.answers import extract_answer
from services.protocol.kinds import kind_name

log = logging.getLogger(__name__)

SolveFn = Callable[..., Awaitable[outcome_pb2.Result]]
MAX_BASE_ID = 120  # a sample's id adds "-s<i>" to its problem's id


# ------------------------------------------------------------------------------------- equivalence

def code_key(code: str) -> str:
    """Code with formatting, comments and docstrings ignored; the text itself if it does not parse."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return re.sub(r"\s+", " ", code).strip()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.dump(tree)


def answer_key(kind: str, text: str) -> str:
    """The answer a sample votes for, normalised for cheap comparison; '' when it gives none."""
    answer = extract_answer(text, kind)
    if not answer:
        return ""
    if kind == "code":
        return code_key(answer)
    if kind == "multiple_choice":
        return answer.upper()
    if kind == "math":
        return re.sub(r"\s+", " ", answer).strip()
    return " ".join(answer.lower().split())


def answer_text(kind: str, answer: str) -> str:
    """A final solution's text that holds `answer`, as `answer_key` and the graders read it (math boxed,
    choices on their `Answer:` line)."""
    return f"\\boxed{{{answer}}}" if kind == "math" else f"Answer: {answer}"


def rule_name(rule: int) -> str:
    """A final-answer vote's rule (outcome_pb2.VoteRule) as logs, metrics and audits name it: `tie_computed`."""
    return outcome_pb2.VoteRule.Name(rule).removeprefix("VOTE_RULE_").lower()


@dataclass(frozen=True)
class Tally:
    winner: int | None  # index of the representative sample; None when no sample gave an answer
    votes: int
    classes: list[list[int]]  # sample indices per class, in order of first appearance


def group(kind: str, texts: list[str]) -> list[list[int]]:
    """The indices of `texts` per equivalence class of their final answers, classes in order of first
    appearance; a text with no answer is in none. Also the final-answer vote's grouping (ceo/answer_vote.py)."""
    keys = [answer_key(kind, t) for t in texts]
    classes: list[list[int]] = []
    for i, key in enumerate(keys):
        if not key:
            continue
        for members in classes:
            if answers_match(kind, keys[members[0]], key):
                members.append(i)
                break
        else:
            classes.append([i])
    return classes


def majority(kind: str, texts: list[str]) -> Tally:
    classes = group(kind, texts)
    if not classes:
        return Tally(winner=None, votes=0, classes=[])
    best = max(classes, key=lambda members: (len(members), -members[0]))
    return Tally(winner=best[0], votes=len(best), classes=classes)


# ------------------------------------------------------------------------------------------- budget

def token_targets(match_results: Path) -> tuple[dict[str, int], float]:
    """Tokens per benchmark item of another run (its results.jsonl), and their mean for items it lacks."""
    from services.evaluation.runner import load_done

    if not match_results.exists():
        raise FileNotFoundError(f"{match_results} does not exist: point --match at a `conclave eval` --out directory")
    done = load_done(match_results)
    if not done:
        raise ValueError(f"{match_results} holds no graded problem to match")
    targets = {item_id: g.total_tokens for item_id, g in done.items()}
    return targets, statistics.fmean(targets.values())


def next_wave(spent: int, drawn: int, target: float, per_sample: float, k_max: int) -> int:
    """How many more samples to draw at once so the total lands near `target` tokens."""
    if drawn == 0:
        return 1
    if drawn >= k_max or spent + per_sample / 2 >= target:
        return 0
    return max(1, min(k_max - drawn, round((target - spent) / max(per_sample, 1.0))))


# --------------------------------------------------------------------------------------------- solve

@dataclass
class VoteSettings:
    k: int = 0  # samples per problem; 0 = match `targets`
    k_max: int = 64
    targets: dict[str, int] = field(default_factory=dict)
    default_target: float = 0.0


@dataclass
class VoteRecord:
    id: str
    k: int
    target_tokens: float
    winner: int | None
    votes: int
    answers: list[str]
    tokens: list[int]  # per sample; for code, a last entry for the call that wrote the tests
    statuses: list[str]
    classes: list[list[int]] = field(default_factory=list)
    # per sample: why it has no answer ("" when it has one): a submission refusal (busy, unavailable), a
    # failed step (step_failed), or timeout
    errors: list[str] = field(default_factory=list)
    asserts_passed: list[int] = field(default_factory=list)  # code: per class, of the model's own tests


class VoteSolver:
    """Stands in for `services.client.solve.solve` in the eval runner: one problem in, one Result out."""

    def __init__(self, settings: VoteSettings, out_dir: Path, solve: SolveFn | None = None) -> None:
        if settings.k <= 0 and not settings.targets:
            raise ValueError("vote with k=auto needs the token targets of a run to match")
        if solve is None:
            from services.client.solve import solve
        self.settings, self._solve, self._path = settings, solve, out_dir / "votes.jsonl"
        self._lock = asyncio.Lock()

    def sample(self, problem: problem_pb2.Problem, i: int) -> problem_pb2.Problem:
        p = problem_pb2.Problem()
        p.CopyFrom(problem)
        base = problem.id
        if len(base) > MAX_BASE_ID:  # ids are at most 128 characters; keep long ones unique with a hash
            base = f"{base[:MAX_BASE_ID - 9]}-{hashlib.blake2b(base.encode(), digest_size=4).hexdigest()}"
        p.id, p.single_agent = f"{base}-s{i}", True
        p.metadata["vote_sample"] = str(i)
        return p

    async def __call__(self, nc: Client, problem: problem_pb2.Problem, *, timeout_s: float | None = None,
                       **_: object) -> outcome_pb2.Result:
        started = time.monotonic()
        item_id = problem.metadata.get("source_id", problem.id)
        s = self.settings
        target = 0.0 if s.k > 0 else float(s.targets.get(item_id, s.default_target))
        results: list[outcome_pb2.Result] = []

        async def draw(i: int) -> outcome_pb2.Result:
            try:
                r = await self._solve(nc, self.sample(problem, i), timeout_s=timeout_s)
            except TimeoutError:
                r = outcome_pb2.Result(problem_id=f"{problem.id}-s{i}", status="error", stop_reason="timeout")
            return r

        if s.k > 0:
            results = list(await asyncio.gather(*(draw(i) for i in range(s.k))))
        else:
            while True:
                spent = sum(r.total_tokens for r in results)
                # This problem's own samples say what one more costs (a hard problem's answers run longer).
                per_sample = statistics.fmean(r.total_tokens for r in results) if results else 1.0
                more = next_wave(spent, len(results), target, per_sample, s.k_max)
                if not more:
                    break
                results += await asyncio.gather(*(draw(len(results) + j) for j in range(more)))
        kind = kind_name(problem)
        texts = [r.answer if r.status == "ok" else "" for r in results]
        tally = majority(kind, texts)
        tested: list[int] = []
        if kind == "code" and len(tally.classes) > 1:
            tally, tested, tests_result = await self._by_own_tests(nc, problem, tally, texts, timeout_s)
            results.append(tests_result)  # its tokens count; it is no sample (turns counts samples)
        return await self._aggregate(problem, item_id, target, results, texts, tally, tested,
                                     time.monotonic() - started)

    async def _by_own_tests(self, nc: Client, problem: problem_pb2.Problem, tally: Tally, texts: list[str],
                            timeout_s: float | None) -> tuple[Tally, list[int], outcome_pb2.Result]:
        """Code: the class whose representative passes most of the model's own tests (vote_code.py)."""
        try:
            written = await self._solve(nc, vote_code.tests_problem(problem, problem.id), timeout_s=timeout_s)
        except TimeoutError:
            written = outcome_pb2.Result(status="error", stop_reason="timeout")
        setup, asserts = vote_code.split_asserts(written.answer) if written.status == "ok" else ("", [])
        if not asserts:
            return tally, [], written
        passes = [await vote_code.passed_asserts(texts[c[0]], setup, asserts, problem) for c in tally.classes]
        best = tally.classes[vote_code.pick(tally.classes, passes)]
        return Tally(winner=best[0], votes=len(best), classes=tally.classes), passes, written

    async def _aggregate(self, problem: problem_pb2.Problem, item_id: str, target: float,
                         results: list[outcome_pb2.Result], texts: list[str], tally: Tally, tested: list[int],
                         wall_s: float) -> outcome_pb2.Result:
        kind = kind_name(problem)
        samples = len(texts)
        total = sum(r.total_tokens for r in results)
        out = outcome_pb2.Result(problem_id=problem.id, status="ok", stop_reason="vote", turns=samples,
                                 total_tokens=total, wall_s=wall_s, single_agent=True,
                                 stop_detail=f"{tally.votes} of {samples} samples agree")
        if tally.winner is not None:
            rep = results[tally.winner]
            out.answer, out.extracted_answer = rep.answer, rep.extracted_answer
        prompt = sum(t.prompt_tokens for r in results for t in r.tokens)
        completion = sum(t.completion_tokens for r in results for t in r.tokens)
        out.tokens.add(role=agents_pb2.ROLE_SINGLE, prompt_tokens=prompt, completion_tokens=completion,
                       calls=sum(t.calls for r in results for t in r.tokens))
        record = VoteRecord(id=item_id, k=samples, target_tokens=target,
                            winner=tally.winner, votes=tally.votes,
                            answers=[extract_answer(t, kind)[:200] for t in texts],
                            tokens=[r.total_tokens for r in results], statuses=[r.status for r in results],
                            classes=tally.classes, asserts_passed=tested,
                            errors=["" if r.status == "ok" else r.error.code or r.stop_reason or r.status
                                    for r in results])
        async with self._lock:
            with self._path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(record)) + "\n")
        return out


def settings_for(k: str, match: Path | None, k_max: int) -> VoteSettings:
    """From the CLI: `--k 8`, or `--k auto --match RUN_DIR`."""
    if k == "auto":
        if match is None:
            raise ValueError("--k auto needs --match RUN_DIR, the team run whose tokens per problem to match")
        targets, mean = token_targets(match / "results.jsonl")
        return VoteSettings(k=0, k_max=k_max, targets=targets, default_target=mean)
    try:
        number = int(k)
    except ValueError as exc:
        raise ValueError(f"--k {k!r}: a whole number of samples, or auto") from exc
    if not 1 <= number <= k_max:
        raise ValueError(f"--k {number}: between 1 and --k-max {k_max}")
    return VoteSettings(k=number, k_max=k_max)
