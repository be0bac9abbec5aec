"""The final-answer vote of `final_answer: vote` profiles (math500-grounded; not the paper's protocol).

The paper's team answers with its last solution. On the CPU anchor (docs/results.md, issue 15) the
model-written checks often computed the right value while the solver's prose answer was wrong, and the
revisions ignored them. So here the final answer is the majority over the answers the team produced:
- each solver answer (the first draft, and each revision or later turn that changed the answer: a
  revision repeating its previous answer is the same opinion again, not a new vote);
- each value a check program computed in the sandbox (`ExecutionResult.computed`: it ran to the end,
  printed a value, and was no echo of a constant), whether it agreed with the solution or not.
Answers are grouped as `--mode vote` groups them (services/evaluation/vote.py, math-verify equivalence
for math, the letter for choices). The class with the most votes wins; in a tie, a class holding a
computed value wins over one that holds none (a program's output is evidence, a prose answer an
opinion); a tie that rule leaves goes to the class whose first candidate came earliest. The final
answer is the winning class's first solver answer (the solver's formatting), else its first computed
value; the plan is replaced only when the winner differs from the team's last answer.

The candidates are noted in the problem's state as the run goes (so a resumed run has them), and the
vote (every candidate, its class, the winner and the rule that chose it) is in the trajectory
(`Trajectory.answer_vote`) for the trainer and `conclave audit`.
"""

from __future__ import annotations

from ceo.state import ProblemState
from conclave.v1 import agents_pb2, outcome_pb2
from services.evaluation.graders import answers_match
from services.evaluation.vote import answer_text, group, rule_name
from services.protocol.answers import extract_answer
from services.protocol.profile import Profile

SOLVER, CHECK = outcome_pb2.CANDIDATE_SOURCE_SOLVER, outcome_pb2.CANDIDATE_SOURCE_CHECK


def note_solution(st: ProblemState, kind: str, text: str, turn: int, round_: int) -> None:
    """A solver's new plan votes, unless its answer repeats the solver's previous one (or it has none)."""
    answer = extract_answer(text, kind)
    if not answer:
        return
    previous = [a for source, a, _, _ in st.candidates if source == SOLVER]
    if previous and answers_match(kind, previous[-1], answer):
        return
    st.candidates.append([SOLVER, answer, turn, round_])


def note_check(st: ProblemState, execution: agents_pb2.ExecutionResult, turn: int, round_: int) -> None:
    """A check's value votes if the program computed it."""
    if execution.kind == "check" and execution.computed and execution.check_answer:
        st.candidates.append([CHECK, execution.check_answer, turn, round_])


def tally(kind: str, candidates: list[list], plan_answer: str) -> outcome_pb2.AnswerVote:
    """The vote over `candidates` ([source, answer, turn, round] each, in the order they came)."""
    vote = outcome_pb2.AnswerVote()
    for source, answer, turn, round_ in candidates:
        vote.candidates.add(source=source, answer=answer, turn=turn, round=round_, answer_class=-1)
    classes = group(kind, [answer_text(kind, a) for _, a, _, _ in candidates])
    if not classes:
        vote.rule, vote.winner_class, vote.winner = outcome_pb2.VOTE_RULE_NO_CANDIDATE, -1, -1
        return vote
    for c, members in enumerate(classes):
        vote.class_votes.append(len(members))
        for i in members:
            vote.candidates[i].answer_class = c
    top = max(len(m) for m in classes)
    tied = [c for c, m in enumerate(classes) if len(m) == top]
    computed = [c for c in tied if any(vote.candidates[i].source == CHECK for i in classes[c])]
    if len(tied) == 1:
        rule, best = outcome_pb2.VOTE_RULE_MAJORITY, tied[0]
    elif len(computed) == 1:
        rule, best = outcome_pb2.VOTE_RULE_TIE_COMPUTED, computed[0]
    else:
        # classes are in order of their first candidate: the first tied one (among the computed, if any)
        rule, best = outcome_pb2.VOTE_RULE_TIE_EARLIEST, (computed or tied)[0]
    members = classes[best]
    solver = [i for i in members if vote.candidates[i].source == SOLVER]
    vote.winner_class, vote.winner, vote.rule = best, (solver or members)[0], rule
    winner_answer = vote.candidates[vote.winner].answer
    vote.changed = not (plan_answer and answers_match(kind, plan_answer, winner_answer))
    return vote


def decide_final(st: ProblemState, kind: str, profile: Profile) -> outcome_pb2.AnswerVote | None:
    """Holds the vote and, when the winner is not the last plan's answer, makes it the plan; None for a
    profile that answers with its last solution."""
    if profile.final_answer != "vote" or kind not in ("math", "multiple_choice"):
        return None
    vote = tally(kind, st.candidates, extract_answer(st.plan, kind) if st.plan else "")
    if vote.changed and vote.winner >= 0:
        c = vote.candidates[vote.winner]
        st.plan = profile.fragment("voted_answer", answer=answer_text(kind, c.answer), votes=vote.class_votes[vote.winner_class],
                                   candidates=len(vote.candidates)).strip()
    return vote


def describe(vote: outcome_pb2.AnswerVote) -> str:
    """One line for the progress stream: the classes, the winner and why."""
    if vote.winner < 0:
        return "final vote: no candidate answer; the last solution stands"
    classes: dict[int, list[str]] = {}
    for c in vote.candidates:
        tag = "computed" if c.source == CHECK else "solver"
        classes.setdefault(c.answer_class, []).append(f"{c.answer} ({tag}, turn {c.turn})")
    parts = "; ".join(f"{vote.class_votes[k]} for {' = '.join(v)}" for k, v in sorted(classes.items()))
    won = vote.candidates[vote.winner].answer
    return f"final vote: {parts}. Winner {won} by {rule_name(vote.rule)}" + (", replacing the last solution" if vote.changed else "")
