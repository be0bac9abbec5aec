"""Where does the team lose right answers? Replays archived trajectories of a team run, step by step.

For each problem: the answer of every solution the solver wrote (its first draft, each revision, each
later turn's solution), graded against the reference; the evaluator's verdict and the CEO's decisions;
and the single agent's answer from a single-agent run of the same benchmark. The first step at which
a right answer became wrong gets a name:
- `first_draft`: the single agent was right, the team's first draft was not (the draft differs from
  the single agent's call by the CEO's direction and the recruited persona; the ablation profiles
  separate the two);
- `revision`: a critique round made the solver revise a right answer into a wrong one;
- `new_turn`: a later turn's first solution (after a new CEO direction) replaced a right answer;
- `vote`: the last solution was right, and the final-answer vote (`final_answer: vote`, ceo/answer_vote.py)
  chose a wrong answer over it;
- `never_right`: no solution of the team was right (and the single agent was not either).
Under `final_answer: vote` the final answer is the vote's (Trajectory.answer_vote), and each problem says
what the vote did: `vote_gained` (it replaced a wrong last solution with a right answer), `vote_lost`
(a right one with a wrong answer), `vote_changed` (a wrong one with another wrong answer), with the rule
that chose the winner; the candidates are listed with their grades.
Context worth counting: the evaluator rejected a right answer (`rejected_right`), accepted a wrong one
(`accepted_wrong`), and the CEO stopped on a wrong answer with turns left (`ceo_stopped_wrong`).

Only math and multiple-choice problems are graded here (code needs the hidden tests: see eval).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from google.protobuf import json_format

from conclave.v1 import agents_pb2, outcome_pb2
from services.evaluation.graders import grade_choice, grade_math
from services.evaluation.vote import answer_text, rule_name
from services.protocol import profile as profiles
from services.protocol.answers import extract_answer
from services.protocol.kinds import kind_name

R = agents_pb2
LOSS_STEPS = ("first_draft", "revision", "new_turn", "vote", "never_right")


@dataclass
class Draft:
    turn: int
    round: int
    answer: str
    correct: bool
    kept: bool = True  # False: malformed, the previous solution stayed the plan


@dataclass
class ProblemAudit:
    id: str
    problem_id: str
    single_correct: bool | None
    single_answer: str
    first_draft: Draft | None
    final_answer: str
    final_correct: bool
    loss_step: str  # one of LOSS_STEPS, or "" when the team ended right
    loss_at: str  # "turn 1 round 2", where loss_step happened
    # What the solver had just been told: the objection it revised on, or the CEO's direction and the
    # persona of the turn whose first solution was wrong.
    loss_cause: str = ""
    drafts: list[Draft] = field(default_factory=list)
    verdicts: list[int] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    stop_reason: str = ""
    # final_answer: vote: each candidate "answer ✓/✗ (source, turn)", and "winner by rule"
    votes: list[str] = field(default_factory=list)


def _grade(kind: str, text: str, reference: str) -> bool:
    if not reference or not text:
        return False
    if kind == "math":
        return grade_math(text, reference)
    if kind == "multiple_choice":
        return grade_choice(text, reference)
    return False


def audit_trajectory(traj: outcome_pb2.Trajectory, *, item_id: str = "", single: dict | None = None) -> ProblemAudit:
    """`single`: the single agent's row of its results.jsonl on the same item (correct, extracted)."""
    kind, ref = kind_name(traj.problem), traj.problem.reference_answer
    steps: dict[tuple[int, int], outcome_pb2.TrajectoryMessage] = {}
    for m in sorted(traj.messages, key=lambda m: m.seq):
        if m.role == R.ROLE_SOLVER:
            steps[(m.turn, m.round)] = m  # parse retries of one step: its last call is the reply
    drafts: list[Draft] = []
    have_plan = False
    for (turn, round_), m in steps.items():
        text = m.call.visible_text
        kept = not (m.fallback and have_plan)  # the loop keeps the old plan over a malformed one
        drafts.append(Draft(turn=turn, round=round_, answer=extract_answer(text, kind)[:200],
                            correct=_grade(kind, text, ref), kept=kept))
        have_plan = have_plan or kept
    plans = [d for d in drafts if d.kept]
    final = plans[-1] if plans else None
    context, votes = [], []
    if traj.HasField("answer_vote") and traj.answer_vote.winner >= 0:
        final, votes, effect = _voted(traj, kind, ref, final)
        context += [effect] if effect else []
    verdicts = [e.correctness for e in traj.evaluations]
    single_correct = None if single is None else bool(single.get("correct"))

    loss, at, cause = "", "", ""
    if final is None or not final.correct:
        loss = "never_right"
        if plans and plans[-1].correct:  # only the vote can have lost the last solution's right answer
            loss, at, cause = "vote", f"turn {plans[-1].turn}", "final vote: " + "; ".join(votes)
            plans_lost = []
        else:
            plans_lost = plans
        for prev, cur in zip(plans_lost, plans_lost[1:], strict=False):
            if prev.correct and not cur.correct:
                loss, at = ("revision" if cur.round > 0 else "new_turn"), f"turn {cur.turn} round {cur.round}"
                cause = _cause(traj, steps[(cur.turn, cur.round)])
                break
        if loss == "never_right" and single_correct and plans and not plans[0].correct:
            loss, at = "first_draft", f"turn {plans[0].turn}"
            cause = _cause(traj, steps[(plans[0].turn, plans[0].round)])

    evaluations = list(traj.evaluations)
    for turn, ev in enumerate(evaluations, start=1):
        turn_plans = [d for d in plans if d.turn <= turn]
        if not turn_plans:
            continue
        right = turn_plans[-1].correct
        if right and ev.correctness == 0:
            context.append(f"rejected_right (turn {turn})")
        if not right and ev.correctness == 1 and not ev.blocked:
            context.append(f"accepted_wrong (turn {turn})")
    result = traj.result
    if result.stop_reason == "ceo_stop" and final is not None and not final.correct:
        context.append("ceo_stopped_wrong")
    return ProblemAudit(
        id=item_id or result.metadata.get("source_id", traj.problem.id), problem_id=traj.problem.id,
        single_correct=single_correct, single_answer=str((single or {}).get("extracted", ""))[:200],
        first_draft=plans[0] if plans else None, final_answer=final.answer if final else "",
        final_correct=bool(final and final.correct), loss_step=loss, loss_at=at, loss_cause=cause[:300],
        drafts=drafts, verdicts=verdicts,
        context=context, stop_reason=result.stop_reason, votes=votes,
    )


def _voted(traj: outcome_pb2.Trajectory, kind: str, ref: str, last: Draft | None) -> tuple[Draft, list[str], str]:
    """The final answer the vote chose (as a Draft), its candidates graded, and what it did to the last plan."""
    vote = traj.answer_vote

    def right(answer: str) -> bool:
        return _grade(kind, answer_text(kind, answer), ref)

    lines = []
    for c in vote.candidates:
        source = "computed" if c.source == outcome_pb2.CANDIDATE_SOURCE_CHECK else "solver"
        lines.append(f"{c.answer[:30]} {'✓' if right(c.answer) else '✗'} ({source}, turn {c.turn})")
    won = vote.candidates[vote.winner]
    rule = rule_name(vote.rule)
    lines.append(f"winner {won.answer[:30]} by {rule}")
    final = Draft(turn=won.turn, round=won.round, answer=won.answer[:200], correct=right(won.answer))
    effect = ""
    if vote.changed:
        was_right = bool(last and last.correct)
        effect = ("vote_lost" if was_right else "vote_gained" if final.correct else "vote_changed") + f" ({rule})"
    return final, lines, effect


def _cause(traj: outcome_pb2.Trajectory, solver: outcome_pb2.TrajectoryMessage) -> str:
    """What preceded a solver's step: the objections it revised on (round > 0), else the turn's direction."""
    if solver.round > 0:
        objections = [m.call.visible_text.strip() for m in traj.messages
                      if m.role == R.ROLE_CRITIC and m.turn == solver.turn and m.round == solver.round and not m.agree]
        return "critique: " + " | ".join(objections) if objections else "critique: (none recorded)"
    if (solver.turn, solver.round) == (1, 0) and _first_draft_single(traj.problem):
        return "asked as the single agent (first_draft: single): no persona, no direction"
    direction = next((d.direction for d in traj.decisions if d.turn == solver.turn), "")
    return f"persona: {solver.persona or '-'}; direction: {direction or '-'}"


def _first_draft_single(problem) -> bool:
    """Whether the problem's profile asked its first draft as the single agent (first_draft: single)."""
    try:
        return profiles.resolve(problem).first_draft == "single"
    except profiles.ProfileError:
        return False  # a profile this machine lacks: say what the trajectory shows


def load_trajectory(path: Path) -> outcome_pb2.Trajectory:
    return json_format.Parse(path.read_text(encoding="utf-8"), outcome_pb2.Trajectory(), ignore_unknown_fields=True)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class AuditError(ValueError):
    pass


def audit_run(team_dir: Path, archive_dir: Path, single_dir: Path | None = None) -> list[ProblemAudit]:
    results = team_dir / "results.jsonl"
    if not results.exists():
        raise AuditError(f"{results} does not exist: point at the --out directory of a team `conclave eval` run")
    single = {r["id"]: r for r in _rows(single_dir / "results.jsonl")} if single_dir else {}
    audits, missing = [], []
    for row in _rows(results):
        path = archive_dir / f"{row['problem_id']}.json"
        if not path.exists():
            missing.append(row["id"])
            continue
        audits.append(audit_trajectory(load_trajectory(path), item_id=row["id"], single=single.get(row["id"])))
    if not audits:
        raise AuditError(f"no trajectory of the run's {len(missing)} problems in {archive_dir}: pass the archive "
                         "directory of the stack that ran it (conclave up: STATE_DIR/archive)")
    return audits


def summarize(audits: list[ProblemAudit]) -> dict:
    with_single = [a for a in audits if a.single_correct is not None]
    lost = [a for a in with_single if a.single_correct and not a.final_correct]
    return {
        "problems": len(audits),
        "single_correct": sum(bool(a.single_correct) for a in with_single) if with_single else None,
        "first_draft_correct": sum(bool(a.first_draft and a.first_draft.correct) for a in audits),
        "final_correct": sum(a.final_correct for a in audits),
        "single_right_team_wrong": len(lost),
        "team_right_single_wrong": sum(1 for a in with_single if a.final_correct and not a.single_correct),
        "loss_step_where_single_right": dict(Counter(a.loss_step for a in lost)),
        "loss_step_all": dict(Counter(a.loss_step for a in audits if a.loss_step)),
        "context": dict(Counter(c.split(" (")[0] for a in audits for c in a.context)),
    }


def markdown(audits: list[ProblemAudit], summary: dict) -> str:
    def mark(ok: bool | None, answer: str) -> str:
        if ok is None:
            return "-"
        return f"{'✓' if ok else '✗'} `{answer[:30]}`"

    lines = [
        "# Where the team loses right answers",
        "",
        f"{summary['problems']} problems: single agent right {summary['single_correct']}, team's first draft right "
        f"{summary['first_draft_correct']}, team's final answer right {summary['final_correct']}. "
        f"Single right and team wrong: {summary['single_right_team_wrong']} "
        f"(lost at: {', '.join(f'{k} {v}' for k, v in summary['loss_step_where_single_right'].items()) or '-'}); "
        f"team right and single wrong: {summary['team_right_single_wrong']}.",
        "",
        "Evaluator and CEO: " + (", ".join(f"{k} {v}" for k, v in summary["context"].items()) or "-") + ".",
        "",
        "| problem | single | first draft | final | lost at | answers in order | verdicts | stop |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in audits:
        fd = a.first_draft
        trail = " → ".join(f"{d.answer[:12] or '∅'}{'✓' if d.correct else '✗'}{'' if d.kept else '(dropped)'}"
                           for d in a.drafts)
        lines.append(
            f"| {a.id} | {mark(a.single_correct, a.single_answer)} | {mark(fd.correct, fd.answer) if fd else '-'} | "
            f"{mark(a.final_correct, a.final_answer)} | {a.loss_step} {a.loss_at}".rstrip() + " | "
            f"{trail} | {''.join(map(str, a.verdicts))} | {a.stop_reason} |")
    voted = [a for a in audits if a.votes]
    if voted:
        lines += ["", "Final-answer votes (final_answer: vote):", ""]
        lines += [f"- {a.id}: {'; '.join(a.votes)}" for a in voted]
    causes = [a for a in audits if a.loss_cause]
    if causes:
        lines += ["", "What the solver had just been told where an answer was lost:", ""]
        lines += [f"- {a.id} ({a.loss_step}): {a.loss_cause.replace(chr(10), ' ')[:300]}" for a in causes]
    return "\n".join(lines) + "\n"


def write(out: Path, audits: list[ProblemAudit]) -> dict:
    summary = summarize(audits)
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.md").write_text(markdown(audits, summary), encoding="utf-8")
    (out / "audit.json").write_text(json.dumps({"summary": summary, "problems": [asdict(a) for a in audits]},
                                               indent=2), encoding="utf-8")
    return summary
