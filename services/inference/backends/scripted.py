"""ScriptedBackend: a deterministic scripted model for protocol tests and demos; never a default.

Answers come from a script: rules matched in order on the agent role and a regex searched in the
prompt (the last user message, or the raw prompt), or one callable. The answer is streamed one "token"
(a word with its leading whitespace) at a time, after a fixed per-call latency (0 for the zero-latency
mode) and an optional per-token delay. max_tokens and stop strings are honoured like a real pod.

Continuations: when a request carries an assistant prefix, the model continues its scripted answer
after that prefix; if the prefix closed a thinking block the script had not closed yet (budget forcing),
it answers with the part of its script after its own closing tag.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.inference.backends.base import Chunk, GenRequest, PodError, PodUsage
from services.inference.pods import Pod

TOKEN_RE = re.compile(r"\s*\S+|\s+")

Responder = str | Callable[[GenRequest], str]


@dataclass(frozen=True)
class ScriptRule:
    response: Responder
    pattern: str = ""  # regex searched in the prompt; "" matches everything
    role: str = ""  # only requests of this agent role; "" for any

    def matches(self, req: GenRequest, text: str) -> bool:
        if self.role and self.role != req.role:
            return False
        return not self.pattern or re.search(self.pattern, text, re.S) is not None


def tokens(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def prompt_text(req: GenRequest) -> str:
    if req.is_chat:
        users = [m.content for m in req.messages if m.role == "user"]
        return users[-1] if users else req.messages[-1].content
    return req.prompt


def load_script(path: str) -> list[ScriptRule]:
    """A YAML or JSON list of {response, pattern, role} mappings."""
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        rules = yaml.safe_load(text)
    else:
        rules = json.loads(text)
    return [ScriptRule(response=r["response"], pattern=r.get("pattern", ""), role=r.get("role", "")) for r in rules]


class ScriptedBackend:
    kind = "scripted"

    def __init__(self, script: Sequence[ScriptRule] | Callable[[GenRequest], str], *, latency_s: float = 0.0,
                 token_latency_s: float = 0.0, default: str = "OK", think_close: str = "</think>",
                 model: str = "scripted") -> None:
        self._script = script
        self.latency_s = latency_s
        self.token_latency_s = token_latency_s
        self._default = default
        self._close = think_close
        self.model = model
        # Pod names that behave as if down: connection refused before the first token.
        self.down: set[str] = set()
        # The latest requests, for tests to inspect.
        self.calls: deque[GenRequest] = deque(maxlen=256)

    def answer(self, req: GenRequest) -> str:
        if callable(self._script):
            return self._script(req)
        text = prompt_text(req)
        for rule in self._script:
            if rule.matches(req, text):
                return rule.response(req) if callable(rule.response) else rule.response
        return self._default

    def _continuation(self, req: GenRequest) -> str:
        full = self.answer(req)
        prefix = req.assistant_prefix
        if not prefix:
            return full
        if full.startswith(prefix):
            return full[len(prefix):]
        if self._close in prefix and self._close in full:
            return full.split(self._close, 1)[1].lstrip("\n")
        return full

    async def stream(self, req: GenRequest, pod: Pod) -> AsyncIterator[Chunk]:
        if pod.name in self.down:
            raise PodError(f"{pod.name}: connection refused (scripted)", retryable=True)
        self.calls.append(req)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        text = self._continuation(req)
        finish = "stop"
        cut = min((i for i in (text.find(s) for s in req.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        pieces = tokens(text)
        if len(pieces) > req.max_tokens:
            pieces, finish = pieces[: req.max_tokens], "length"
        for piece in pieces:
            if self.token_latency_s:
                await asyncio.sleep(self.token_latency_s)
            yield Chunk(piece)
        prompt_tokens = sum(len(tokens(m.content)) for m in req.messages) + len(tokens(req.prompt + req.assistant_prefix))
        yield Chunk(usage=PodUsage(prompt_tokens, len(pieces), finish))

    async def count_tokens(self, req: GenRequest, pod: Pod) -> int:
        return sum(len(tokens(m.content)) for m in req.messages) + len(tokens(req.prompt))

    async def list_models(self, pod: Pod) -> list[str]:
        return [self.model]

    async def health(self, pod: Pod) -> bool:
        return pod.name not in self.down

    async def close(self) -> None:
        return None
