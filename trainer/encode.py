"""Token ids and labels for one chat sample: the loss falls on the assistant turn only.

The prompt is rendered with the model's own chat template and a generation prompt; the full sample is
rendered without one. The prompt's tokens get the label -100 (ignored), the rest (the assistant text
and the template's end-of-turn token) are trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE = -100


class EncodeError(ValueError):
    """`reason` is a fixed code (for counting skipped samples); the message has the details."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def _ids(rendered: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); 4.x a list.
    if isinstance(rendered, dict) or hasattr(rendered, "keys"):
        rendered = rendered["input_ids"]
    return list(rendered)


def encode(tokenizer: Any, messages: list[dict[str, str]] | tuple[dict[str, str], ...], max_len: int) -> Encoded:
    if not messages or messages[-1]["role"] != "assistant":
        raise EncodeError("no_answer", "a sample must end with the assistant turn")
    prompt = _ids(tokenizer.apply_chat_template(list(messages[:-1]), tokenize=True, add_generation_prompt=True))
    full = _ids(tokenizer.apply_chat_template(list(messages), tokenize=True))
    if full[: len(prompt)] != prompt:
        raise EncodeError("template_mismatch", "the chat template renders the prompt differently once the answer "
                          "follows; cannot tell the prompt's tokens from the answer's")
    if len(prompt) >= max_len:
        raise EncodeError("prompt_too_long", f"the prompt alone has {len(prompt)} tokens, the sequence limit is {max_len}")
    full = full[:max_len]
    return Encoded(input_ids=full, labels=[IGNORE] * len(prompt) + full[len(prompt):])
