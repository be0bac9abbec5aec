"""Token budgets of one call: thinking prefill, budget forcing, and the raw/visible split.

How reasoning is done here (one mechanism for every backend): the answer is prefilled through the
request's *assistant prefix* (GenRequest.assistant_prefix), which chat pods continue as an open assistant
turn and raw-prompt pods get appended to the prompt.

* prefill_think: the prefix is `<think>\n`; it is part of the raw text (and of the first streamed chunk),
  so the stream always concatenates to Usage.raw_text.
* budget forcing: the first segment may use `max_tokens - margin` tokens (margin = force_margin, at most
  half of max_tokens). If it stops on its own, that is the answer. If it runs out inside an open thinking
  block, the gateway appends `</think>\n` (streamed too) and a second segment continues from raw prompt +
  text so far, with at most min(context - max_tokens, max_tokens / 2) extra tokens (and never more than
  the context has left); those tokens are Usage.extra_tokens. If it runs out with thinking closed (or
  without thinking), the second segment simply continues for the `margin` tokens still in the budget, so
  max_tokens is never exceeded.
"""

from __future__ import annotations

from dataclasses import dataclass

# Room left for the closing tag's tokens and template tokens when clamping to the context.
_CONTEXT_SLACK = 8


@dataclass(frozen=True, slots=True)
class ReasoningSpec:
    prefill_think: bool = False
    budget_forcing: bool = False
    margin: int = 200
    think_open: str = "<think>"
    think_close: str = "</think>"

    @property
    def active(self) -> bool:
        return self.prefill_think or self.budget_forcing


def first_segment_tokens(max_tokens: int, spec: ReasoningSpec | None) -> int:
    if spec is None or not spec.budget_forcing:
        return max_tokens
    margin = max(0, min(spec.margin, max_tokens // 2))
    return max(1, max_tokens - margin)


def extra_allowance(max_tokens: int, context_length: int) -> int:
    """The most tokens budget forcing may add beyond max_tokens."""
    return max(0, min(context_length - max_tokens, max_tokens // 2))


def answer_allowance(max_tokens: int, context_length: int, prompt_tokens: int, generated: int) -> int:
    """Extra tokens for the answer after a forced `</think>`, clamped to what the context still holds."""
    room = context_length - prompt_tokens - generated - _CONTEXT_SLACK
    return max(0, min(extra_allowance(max_tokens, context_length), room))


def thinking_open(raw: str, spec: ReasoningSpec) -> bool:
    """True when the raw text is inside a thinking block that has not been closed."""
    opened = raw.rfind(spec.think_open)
    return opened >= 0 and raw.rfind(spec.think_close) < opened


def visible_text(raw: str, spec: ReasoningSpec | None) -> str:
    """The answer without its thinking: text after the closing tag; "" if thinking never closed;
    everything when there was no thinking block."""
    spec = spec or ReasoningSpec()
    close = raw.find(spec.think_close)
    if close >= 0:
        return raw[close + len(spec.think_close):].lstrip()
    if raw.lstrip().startswith(spec.think_open):
        return ""
    return raw
