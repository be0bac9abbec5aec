"""What every role agent gets to build its prompt and make its calls."""

from __future__ import annotations

from dataclasses import dataclass

from conclave.v1 import agents_pb2
from services.inference.client import CallOptions, LlmClient
from services.protocol.kinds import kind_name
from services.protocol.profile import Profile


@dataclass
class AgentContext:
    task: agents_pb2.RoleTask
    profile: Profile
    llm: LlmClient
    # The gRPC deadline of each model call (RuntimeSettings.model_call_timeout_s).
    call_timeout_s: float

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
            timeout_s=self.call_timeout_s,
        )

    @property
    def retries(self) -> int:
        return self.task.parse_retries if self.task.parse_retries >= 0 else self.profile.parse_retries
