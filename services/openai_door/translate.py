"""OpenAI chat-completions requests to Conclave problems, and Conclave results and events back to OpenAI shapes.

Pure functions, no I/O: the service wires them to HTTP and the bus. One model per profile:
`conclave-<profile>` (e.g. `conclave-math500`, `conclave-business`), and `conclave` for the default profile.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from conclave.v1 import outcome_pb2, problem_pb2
from services.bus.error_codes import REJECTED, RETRY_LATER
from services.protocol.kinds import KIND_BY_NAME

MODEL_PREFIX = "conclave"
ROLES = ("system", "developer", "user", "assistant")


class RequestError(Exception):
    """A request the door refuses; becomes an OpenAI error object with this HTTP status."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def body(self) -> dict[str, Any]:
        kind = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
                413: "invalid_request_error"}.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "code": self.code, "param": self.param}}


@dataclass
class ChatRequest:
    model: str
    profile: str
    kind: int
    text: str
    stream: bool = False
    include_usage: bool = False
    options: dict[str, Any] = field(default_factory=dict)


def model_ids(profiles: list[str]) -> list[str]:
    return [MODEL_PREFIX] + [f"{MODEL_PREFIX}-{p}" for p in profiles]


def models_body(profiles: list[str], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": m, "object": "model", "created": created, "owned_by": "conclave"}
                                       for m in model_ids(profiles)]}


def _content(message: dict[str, Any], i: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(400, "unsupported_content", "only text content parts are supported",
                                   f"messages[{i}].content")
            texts.append(part["text"])
        return "\n".join(texts)
    raise RequestError(400, "invalid_content", "content must be a string or a list of text parts",
                       f"messages[{i}].content")


def problem_text(messages: list[dict[str, Any]]) -> str:
    """The conversation as one problem statement: instructions, earlier turns, then the last user message."""
    if not messages:
        raise RequestError(400, "invalid_messages", "messages must be a non-empty list", "messages")
    lines: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RequestError(400, "invalid_role", f"each message needs a role among {', '.join(ROLES)}",
                               f"messages[{i}].role")
        lines.append((m["role"], _content(m, i)))
    if lines[-1][0] != "user" or not lines[-1][1].strip():
        raise RequestError(400, "invalid_messages", "the last message must be a non-empty user message", "messages")
    instructions = [c for r, c in lines[:-1] if r in ("system", "developer")]
    history = [f"{r}: {c}" for r, c in lines[:-1] if r in ("user", "assistant")]
    parts = instructions[:]
    if history:
        parts.append("Conversation so far:\n" + "\n".join(history))
    parts.append(lines[-1][1])
    return "\n\n".join(p.strip() for p in parts if p.strip())


def parse_request(body: Any, *, profiles: dict[str, str], default_profile: str) -> ChatRequest:
    """`profiles` maps each profile name to its kind (math, multiple_choice, code, open_ended)."""
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_body", "the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "missing_model", "model is required, e.g. conclave-math500", "model")
    profile = default_profile if model == MODEL_PREFIX else model.removeprefix(MODEL_PREFIX + "-")
    if not model.startswith(MODEL_PREFIX) or profile not in profiles:
        raise RequestError(404, "model_not_found", f"unknown model {model!r}; GET /v1/models lists "
                           f"{', '.join(model_ids(sorted(profiles)))}", "model")
    if body.get("n", 1) != 1:
        raise RequestError(400, "unsupported_n", "a team gives one answer: n must be 1", "n")
    options = body.get("conclave") or {}
    if not isinstance(options, dict):
        raise RequestError(400, "invalid_conclave", "conclave must be an object", "conclave")
    unknown = set(options) - {"max_total_tokens", "max_turns", "single_agent", "reference_answer", "id"}
    if unknown:
        raise RequestError(400, "invalid_conclave", f"unknown conclave options: {', '.join(sorted(unknown))}",
                           "conclave")
    stream_options = body.get("stream_options") or {}
    return ChatRequest(model=model, profile=profile, kind=KIND_BY_NAME[profiles[profile]],
                       text=problem_text(body.get("messages") or []), stream=bool(body.get("stream")),
                       include_usage=bool(isinstance(stream_options, dict) and stream_options.get("include_usage")),
                       options=options)


def to_problem(req: ChatRequest) -> problem_pb2.Problem:
    pid = str(req.options.get("id") or f"oai-{uuid.uuid4().hex[:20]}")
    p = problem_pb2.Problem(id=pid, kind=req.kind, text=req.text, profile=req.profile,
                            single_agent=bool(req.options.get("single_agent")),
                            reference_answer=str(req.options.get("reference_answer") or ""))
    p.limits.max_total_tokens = int(req.options.get("max_total_tokens") or 0)
    p.limits.max_turns = int(req.options.get("max_turns") or 0)
    p.metadata["source"] = "openai_door"
    return p


def usage(result: outcome_pb2.Result) -> dict[str, int]:
    """Every agent's tokens, all roles together."""
    prompt = sum(t.prompt_tokens for t in result.tokens)
    completion = sum(t.completion_tokens for t in result.tokens)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def result_error(result: outcome_pb2.Result) -> RequestError | None:
    if result.status == "ok":
        return None
    # A problem refused for good is the caller's to fix; one not queued now may be sent again (503).
    status = 400 if result.error.code in REJECTED else 503 if result.error.code in RETRY_LATER else 502
    return RequestError(status, result.error.code or "conclave_error",
                        f"{result.error.message or result.stop_detail} (problem {result.problem_id})")


def extras(result: outcome_pb2.Result) -> dict[str, Any]:
    """Conclave's own facts next to the OpenAI fields (clients ignore keys they do not know)."""
    out: dict[str, Any] = {"problem_id": result.problem_id, "stop_reason": result.stop_reason,
                           "stop_detail": result.stop_detail, "turns": result.turns,
                           "extracted_answer": result.extracted_answer, "consensus": result.consensus,
                           "fallbacks": result.fallbacks, "correct": result.correct}
    if result.HasField("report"):
        r = result.report
        out["report"] = {"verdict": r.verdict, "confidence": r.confidence, "complete": r.complete,
                         "risks": list(r.risks), "experiments": list(r.experiments),
                         "findings": [{"domain": f.domain, "text": f.text} for f in r.findings],
                         "problems": list(r.problems)}
    return out


def completion(result: outcome_pb2.Result, model: str, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{result.problem_id}", "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": usage(result), "conclave": extras(result),
    }


def chunk(problem_id: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None,
          **more: Any) -> dict[str, Any]:
    return {"id": f"chatcmpl-{problem_id}", "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **more}


def usage_chunk(result: outcome_pb2.Result, model: str, created: int) -> dict[str, Any]:
    return {"id": f"chatcmpl-{result.problem_id}", "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [], "usage": usage(result)}
