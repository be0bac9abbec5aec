"""A problem's state as the CEO keeps it in JetStream KV, updated after every step.

A replica that picks up a redelivered problem reads this and continues from the last completed step;
the steps themselves are idempotent (deterministic task ids, replies read back from REPLIES).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field

from conclave.v1 import agents_pb2, outcome_pb2

# Phases of one turn, in order.
DECIDE, RECRUIT, SOLVE, REVIEW, REVISE, EXECUTE, EVALUATE, FINISH = (
    "decide", "recruit", "solve", "review", "revise", "execute", "evaluate", "finish",
)


@dataclass
class ProblemState:
    problem_id: str
    started_at: float = field(default_factory=time.time)
    turn: int = 1
    phase: str = DECIDE
    round: int = 0
    n: int = 2
    k: int = 0
    direction: str = ""
    experts: list[str] = field(default_factory=list)
    plan: str = ""
    plan_turn: int = 0
    # The solver keeps its memory for the whole problem; critics start empty every turn.
    solver_memory: list[tuple[str, str]] = field(default_factory=list)
    critic_memory: list[list[tuple[str, str]]] = field(default_factory=list)
    pending_reviews: list[tuple[str, str]] = field(default_factory=list)
    consensus: list[bool] = field(default_factory=list)
    evaluation: dict = field(default_factory=dict)
    execution: dict = field(default_factory=dict)
    execution_plan: str = ""
    tokens: dict[str, list[int]] = field(default_factory=dict)  # role -> [prompt, completion, calls]
    fallbacks: int = 0
    seq: int = 0
    stop_reason: str = ""
    stop_note: str = ""
    published: bool = False
    # final_answer: vote profiles: [source, answer, turn, round] of every answer that votes (ceo/answer_vote.py)
    candidates: list[list] = field(default_factory=list)
    trajectory_b64: str = ""

    def check_of_plan(self) -> dict:
        """The latest check (executor: check) if it ran on the current plan, else {}: a check of an older
        plan (the executor failed since) says nothing about this one."""
        if self.execution.get("kind") != "check" or not self.plan or self.execution_plan != self.plan:
            return {}
        return self.execution

    @property
    def plan_contradicted(self) -> bool:
        """Whether the latest check contradicts the current plan: the CEO is then not offered stop."""
        return bool(self.check_of_plan().get("contradicts"))

    # --- trajectory, kept as protobuf bytes inside the JSON ---
    def trajectory(self) -> outcome_pb2.Trajectory:
        traj = outcome_pb2.Trajectory()
        if self.trajectory_b64:
            traj.ParseFromString(base64.b64decode(self.trajectory_b64))
        return traj

    def append(self, delta: outcome_pb2.Trajectory) -> None:
        # Serialized protobuf messages concatenate as a merge, and repeated fields append: adding a
        # step costs its own size, not a parse and re-serialisation of the whole discussion so far.
        raw = base64.b64decode(self.trajectory_b64) + delta.SerializeToString()
        self.trajectory_b64 = base64.b64encode(raw).decode()

    def record_reply(self, reply: agents_pb2.RoleReply) -> None:
        traj = outcome_pb2.Trajectory()
        for call in reply.calls:
            self.seq += 1
            traj.messages.add(seq=self.seq, turn=reply.turn, round=reply.round, role=reply.role, index=reply.index,
                              persona=reply.persona, call=call, fallback=reply.fallback,
                              fallback_reason=reply.fallback_reason, agree=reply.agree)
            self.add_tokens(agents_pb2.Role.Name(reply.role), call.prompt_tokens, call.completion_tokens)
        if reply.fallback:
            self.fallbacks += 1
        self.append(traj)

    def record_decision(self, decision: agents_pb2.CeoDecision, calls: list[agents_pb2.ModelCall],
                        fallback_reason: str) -> None:
        traj = outcome_pb2.Trajectory()
        traj.decisions.append(decision)
        for call in calls:
            self.seq += 1
            traj.messages.add(seq=self.seq, turn=decision.turn, role=agents_pb2.ROLE_CEO, call=call,
                              fallback=bool(fallback_reason), fallback_reason=fallback_reason)
            self.add_tokens("ROLE_CEO", call.prompt_tokens, call.completion_tokens)
        if fallback_reason:
            self.fallbacks += 1
        self.append(traj)

    def add_tokens(self, role: str, prompt: int, completion: int) -> None:
        entry = self.tokens.setdefault(role, [0, 0, 0])
        entry[0] += prompt
        entry[1] += completion
        entry[2] += 1

    @property
    def tokens_used(self) -> int:
        return sum(p + c for p, c, _ in self.tokens.values())

    # --- KV encoding ---
    def to_bytes(self) -> bytes:
        # vars(), not asdict(): the fields are plain JSON values, and asdict deep-copies every one of
        # them on each save (measured: a quarter of the CEO's CPU per step).
        return json.dumps(vars(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ProblemState:
        doc = json.loads(data)
        doc["solver_memory"] = [tuple(x) for x in doc.get("solver_memory", [])]
        doc["critic_memory"] = [[tuple(x) for x in m] for m in doc.get("critic_memory", [])]
        doc["pending_reviews"] = [tuple(x) for x in doc.get("pending_reviews", [])]
        return cls(**doc)
