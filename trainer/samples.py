"""Chat samples from a trajectory: one per agent message, in generation order, grouped by problem.

Each sample is the prompt the agent was sent (system, then user; the discussion so far is inside the
user turn, as the agents see it) followed by the assistant turn the model wrote. The assistant turn is
the raw text, thinking included, as the paper trained M1 on whole reasoning traces.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from conclave.v1 import agents_pb2, outcome_pb2

_BLOCK = re.compile(r"(?:^|\n\n)<(system|user|assistant)>\n")


@dataclass(frozen=True)
class Sample:
    problem_id: str
    seq: int
    role: str  # the agent's role: ceo, recruiter, solver, critic, evaluator, executor
    messages: tuple[dict[str, str], ...]  # ends with the assistant turn, the only one trained on

    def to_json(self) -> dict:
        return asdict(self) | {"messages": list(self.messages)}

    @classmethod
    def from_json(cls, row: dict) -> Sample:
        return cls(problem_id=row["problem_id"], seq=int(row["seq"]), role=row["role"],
                   messages=tuple({"role": m["role"], "content": m["content"]} for m in row["messages"]))


def prompt_messages(call: agents_pb2.ModelCall) -> list[dict[str, str]]:
    """The chat prompt of a call: exact when the call recorded its messages, else read back from the
    flattened `prompt` of archives written before ModelCall.messages existed."""
    if call.messages:
        return [{"role": m.role, "content": m.content} for m in call.messages]
    parts = _BLOCK.split(call.prompt)
    # parts: [text before the first block, role, content, role, content, ...]
    return [{"role": parts[i], "content": parts[i + 1]} for i in range(1, len(parts) - 1, 2)]


def samples_of(traj: outcome_pb2.Trajectory) -> list[Sample]:
    out = []
    for m in sorted(traj.messages, key=lambda m: m.seq):
        if not m.HasField("call") or not m.call.raw_text:
            continue  # an executor run without a model call, or a call that failed
        prompt = prompt_messages(m.call)
        if not prompt:
            continue
        role = agents_pb2.Role.Name(m.role).removeprefix("ROLE_").lower()
        out.append(Sample(problem_id=traj.problem.id, seq=m.seq, role=role,
                          messages=(*prompt, {"role": "assistant", "content": m.call.raw_text})))
    return out
