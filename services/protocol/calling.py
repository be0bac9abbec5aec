"""One agent step: a model call, parsed, retried with sampling nudges, else the protocol's fallback."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from conclave.v1 import agents_pb2
from services.inference.client import CallOptions, Completion, LlmClient
from services.protocol.parsing import ParseError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Each retry samples a little hotter and with another seed, so it does not repeat the same mistake.
TEMPERATURE_NUDGE = 0.15


@dataclass
class StepOutcome(Generic[T]):
    value: T | None
    calls: list[agents_pb2.ModelCall] = field(default_factory=list)
    fallback_reason: str = ""

    @property
    def fallback(self) -> bool:
        return bool(self.fallback_reason)

    @property
    def last(self) -> agents_pb2.ModelCall | None:
        return self.calls[-1] if self.calls else None


def model_call(messages: list[tuple[str, str]], c: Completion, max_tokens: int) -> agents_pb2.ModelCall:
    prompt = "\n\n".join(f"<{role}>\n{content}" for role, content in messages)
    return agents_pb2.ModelCall(
        prompt=prompt, raw_text=c.raw_text, visible_text=c.visible_text, prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens, max_tokens=max_tokens, finish_reason=c.finish_reason,
        pod=c.pod, seconds=c.seconds,
        messages=[agents_pb2.PromptMessage(role=role, content=content) for role, content in messages],
    )


def seed_for(key: str, attempt: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{key}#{attempt}".encode(), digest_size=4).digest(), "big")


async def call_and_parse(
    llm: LlmClient,
    messages: list[tuple[str, str]],
    opts: CallOptions,
    parse: Callable[[str], T],
    *,
    retries: int,
    key: str,
    reask: Callable[[ParseError], str | None] | None = None,
) -> StepOutcome[T]:
    """Calls the model up to 1 + `retries` times until `parse` accepts the visible text.

    `reask` turns a parse failure into a follow-up question (or None): the next attempt continues the
    conversation with the model's reply and that question instead of asking afresh. A follow-up is
    asked once; if its answer fails too, the attempts end there and the caller's fallback applies.
    """
    outcome: StepOutcome[T] = StepOutcome(value=None)
    base_t = opts.temperature if opts.temperature is not None else 0.7
    reason = ""
    asked = messages
    for attempt in range(retries + 1):
        opts.temperature = min(1.5, base_t + TEMPERATURE_NUDGE * attempt)
        opts.seed = seed_for(key, attempt)
        completion = await llm.generate(asked, opts)
        outcome.calls.append(model_call(asked, completion, opts.max_tokens))
        try:
            outcome.value = parse(completion.visible_text)
            return outcome
        except ParseError as exc:
            reason = str(exc)
            log.info("unparsable reply (attempt %d): %s", attempt + 1, reason)
            if asked is not messages:
                break  # the follow-up was not answered either
            question = reask(exc) if reask else None
            if question:
                asked = [*messages, ("assistant", completion.visible_text), ("user", question)]
    outcome.fallback_reason = f"unparsable after {len(outcome.calls)} attempts: {reason}"
    return outcome
