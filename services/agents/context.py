"""What every role agent gets to build its prompt and make its calls."""

from __future__ import annotations

from dataclasses import dataclass

from ceo.profile import Profile
from conclave.v1 import agents_pb2, problem_pb2
from services.agents.llm import CallOptions, LlmClient

KIND_NAMES = {
    problem_pb2.PROBLEM_KIND_MATH: "math",
    problem_pb2.PROBLEM_KIND_MULTIPLE_CHOICE: "multiple_choice",
    problem_pb2.PROBLEM_KIND_CODE: "code",
    problem_pb2.PROBLEM_KIND_OPEN_ENDED: "open_ended",
}


def kind_name(problem: problem_pb2.Problem) -> str:
    return KIND_NAMES.get(problem.kind, "open_ended")


def problem_text(problem: problem_pb2.Problem) -> str:
    text = problem.text.strip()
    stub = problem.code.stub.strip()
    if stub and stub not in text:
        # The tests call the dataset's entry point: the signature must be in the statement (MBPP's is not).
        text += f"\n\nUse this signature:\n```python\n{stub}\n```"
    if problem.options:
        letters = "ABCDEFGHIJ"
        text += "\n\nOptions:\n" + "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(problem.options))
    return text


def history_block(memory: list[agents_pb2.MemoryLine]) -> str:
    if not memory:
        return ""
    lines = "\n".join(f"[{m.sender}]: {m.content}" for m in memory)
    return f"Discussion so far:\n{lines}\n\n"


@dataclass
class AgentContext:
    task: agents_pb2.RoleTask
    profile: Profile
    llm: LlmClient

    @property
    def kind(self) -> str:
        return kind_name(self.task.problem)

    def options(self, role: int, max_tokens: int) -> CallOptions:
        t = self.task
        return CallOptions(
            max_tokens=max_tokens,
            temperature=t.temperature or self.profile.temperature,
            top_p=t.top_p or self.profile.top_p,
            session_key=t.problem_id,
            ledger_key=t.problem_id if t.token_ceiling else "",
            role=role,
            reasoning=t.reasoning,
            model=t.model,
        )

    @property
    def retries(self) -> int:
        return self.task.parse_retries if self.task.parse_retries >= 0 else self.profile.parse_retries
