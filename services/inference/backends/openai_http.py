"""OpenAI-compatible HTTP pods: `vllm serve`, llama.cpp's server, anything with /v1/chat/completions.

Streams through a small HTTP/1.1 client (http1.py; httpx for the rest) with `stream_options.include_usage`, so token counts come
exactly from the pod's final usage chunk. Closing the stream closes the connection, which makes both
llama.cpp and vLLM abort the request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from services.bus.headers import TRACEPARENT
from services.inference.backends.base import Chunk, GenRequest, PodError, PodUsage, sampling_fields
from services.inference.backends.http1 import Http1Pool, HttpError
from services.inference.backends.sse import DONE, StreamError, data_events
from services.inference.pods import Pod

log = logging.getLogger(__name__)

_ERROR_BODY_LIMIT = 2000
_SETTLE_S = 0.1


def request_body(req: GenRequest) -> tuple[str, dict[str, Any]]:
    """The endpoint and JSON body for one generation."""
    body: dict[str, Any] = {**sampling_fields(req), "stream": True, "stream_options": {"include_usage": True}}
    if req.model:  # without one, vLLM and llama.cpp use the model they serve
        body["model"] = req.model
    if not req.is_chat:
        body["prompt"] = req.prompt + req.assistant_prefix
        return "/v1/completions", body
    messages = [{"role": m.role, "content": m.content} for m in req.messages]
    if req.assistant_prefix:
        # A trailing assistant message is continued, not answered: llama.cpp does this by default
        # (prefill_assistant), vLLM needs the two flags below; each ignores the other's flags.
        messages.append({"role": "assistant", "content": req.assistant_prefix})
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    body["messages"] = messages
    return "/v1/chat/completions", body


class OpenAIHttpBackend:
    kind = "openai"

    def __init__(self, *, connect_timeout_s: float = 2.0, read_timeout_s: float = 300.0,
                 health_timeout_s: float = 2.0, max_connections: int = 64, api_key: str = "") -> None:
        self._health_timeout = httpx.Timeout(health_timeout_s)
        # The streaming path (see http1.py for why not httpx) ...
        auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = Http1Pool(connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
                               max_idle_per_origin=max_connections, headers=auth)
        # ... and httpx for everything else.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=30.0, pool=read_timeout_s),
            # Shorter than the pods' keep-alive timeout (llama.cpp: 5 s), so idle sockets expire here first.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=max_connections,
                                keepalive_expiry=2.0),
            headers=auth,
        )

    async def close(self) -> None:
        await self._http.close()
        await self._client.aclose()

    async def stream(self, req: GenRequest, pod: Pod) -> AsyncIterator[Chunk]:
        path, body = request_body(req)
        try:
            resp = await self._http.post(pod.url, path, json.dumps(body, ensure_ascii=False).encode(),
                                         headers={TRACEPARENT: req.traceparent} if req.traceparent else None)
        except HttpError as exc:  # refused, reset, no answer
            raise PodError(f"{pod.name}: {exc}", retryable=True) from exc
        try:
            if resp.status != 200:
                detail = (await resp.read(_ERROR_BODY_LIMIT)).decode(errors="replace")
                raise PodError(f"{pod.name} answered {resp.status}: {detail}",
                               retryable=resp.status >= 500 or resp.status == 429, status=resp.status)
            async for chunk in _parse(data_events(resp.body()), pod):
                yield chunk
            # _parse stops at [DONE]; the body's end follows at once on vLLM: read it, keep the connection.
            await resp.settle(_SETTLE_S)
        except (HttpError, OSError, TimeoutError) as exc:
            raise PodError(f"{pod.name}: stream broke: {exc!r}", retryable=True) from exc
        except StreamError as exc:
            raise PodError(f"{pod.name}: {exc}", retryable=False) from exc
        finally:
            # Before the end of the body this closes the connection, which aborts the pod's request.
            await resp.aclose()

    async def health(self, pod: Pod) -> bool:
        try:
            resp = await self._client.get(pod.url + "/health", timeout=self._health_timeout)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def list_models(self, pod: Pod) -> list[str]:
        try:
            resp = await self._client.get(pod.url + "/v1/models", timeout=self._health_timeout)
            resp.raise_for_status()
            return [m["id"] for m in resp.json().get("data", [])]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise PodError(f"{pod.name}: /v1/models failed: {exc!r}", retryable=True) from exc

    async def count_tokens(self, req: GenRequest, pod: Pod) -> int:
        timeout = httpx.Timeout(30.0)
        try:
            text = req.prompt
            if req.is_chat:
                messages = [{"role": m.role, "content": m.content} for m in req.messages]
                resp = await self._client.post(pod.url + "/apply-template", json={"messages": messages},
                                               timeout=timeout)
                if resp.status_code == 404:
                    # vLLM: /tokenize applies the chat template itself.
                    resp = await self._client.post(pod.url + "/tokenize", timeout=timeout, json={
                        "model": req.model, "messages": messages, "add_generation_prompt": True})
                    resp.raise_for_status()
                    return int(resp.json()["count"])
                resp.raise_for_status()
                text = resp.json()["prompt"]
            # llama.cpp reads "content", vLLM reads "prompt".
            resp = await self._client.post(pod.url + "/tokenize", timeout=timeout,
                                           json={"content": text, "prompt": text, "model": req.model})
            resp.raise_for_status()
            data = resp.json()
            return int(data["count"]) if "count" in data else len(data["tokens"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise PodError(f"{pod.name}: token count failed: {exc!r}", retryable=True) from exc


async def _parse(events: AsyncIterator[bytes], pod: Pod) -> AsyncIterator[Chunk]:
    finish = ""
    usage: dict[str, Any] | None = None
    n_deltas = 0
    in_reasoning = False
    async for data in events:
        if data == DONE:
            break
        obj = json.loads(data)
        if "error" in obj and "choices" not in obj:
            raise StreamError(json.dumps(obj["error"]))
        if obj.get("usage"):
            usage = obj["usage"]
        choices = obj.get("choices")
        if not choices:
            continue
        choice = choices[0]
        delta = choice.get("delta")
        if delta is None:  # /v1/completions
            text = choice.get("text") or ""
        else:
            text = delta.get("content") or ""
            # Pods run without a reasoning parser; if one splits thinking out anyway, put it back
            # between the tags so that the raw text stays whole.
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                text = ("" if in_reasoning else "<think>\n") + reasoning + text
                in_reasoning = True
            elif in_reasoning and text:
                text = "</think>\n" + text
                in_reasoning = False
        if text:
            n_deltas += 1
            yield Chunk(text)
        if choice.get("finish_reason"):
            finish = choice["finish_reason"]
    if usage is None:
        # An old server without include_usage: each streamed delta is one token in llama.cpp and vLLM.
        log.warning("pod sent no usage; counting deltas", extra={"pod": pod.name})
        usage = {"prompt_tokens": 0, "completion_tokens": n_deltas}
    yield Chunk(usage=PodUsage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                               finish or "stop"))
