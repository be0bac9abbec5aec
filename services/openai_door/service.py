"""The OpenAI-compatible door: POST /v1/chat/completions and GET /v1/models, in front of the bus.

A chat request becomes a Conclave problem on `conclave.problems.submit` (the same path as any client);
the team's final answer comes back as a normal chat completion, with `usage` counting every agent's tokens.
With `stream: true` the discussion streams as Server-Sent Events while it happens (as `reasoning_content`
deltas, the field reasoning models use, so clients do not mistake it for the answer), then the answer as
`content`. Any OpenAI SDK, LangChain or LiteLLM can then use a Conclave team as a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from conclave.v1 import outcome_pb2
from services.bus.error_codes import SubmitError
from services.cli.render import event_text
from services.client.solve import NoIntake, solve
from services.openai_door import translate as T
from services.openai_door.settings import DoorSettings
from services.protocol import profile as profiles
from services.runtime.lifecycle import Runtime, Service
from services.runtime.logs import problem_id_var

log = logging.getLogger(__name__)


class DoorMetrics:
    def __init__(self, registry) -> None:
        self.requests = Counter("conclave_door_requests", "Chat-completion requests, by model and outcome.",
                                ["model", "stream", "outcome"], registry=registry)
        self.seconds = Histogram("conclave_door_request_seconds", "Time from request to answer.", ["stream"],
                                 buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600), registry=registry)
        self.waiting = Gauge("conclave_door_in_flight", "Requests waiting for their team's answer.",
                             registry=registry)
        self.tokens = Counter("conclave_door_tokens", "Tokens spent by every agent for door requests.",
                              ["model"], registry=registry)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


class DoorService(Service[DoorSettings]):
    name = "openai-door"
    description = "OpenAI-compatible HTTP API: a chat completion answered by a Conclave team."

    async def setup(self, rt: Runtime[DoorSettings]) -> None:
        s = self.settings
        if not s.door_api_keys and not is_loopback(s.door_host):
            raise SystemExit(f"openai-door: refusing to listen on {s.door_host} without CONCLAVE_DOOR_API_KEYS; "
                             "set keys (a JSON list) or listen on 127.0.0.1")
        self._rt = rt
        self.m = DoorMetrics(rt.registry)
        self.kinds: dict[str, str] = {}
        for name in profiles.available():
            try:
                self.kinds[name] = profiles.load(name).kind
            except Exception as exc:  # one broken profile must not close the door for the others
                log.error("profile %s not served: %s", name, exc)
        if s.door_default_profile not in self.kinds:
            raise SystemExit(f"openai-door: default profile {s.door_default_profile!r} is not among "
                             f"{', '.join(sorted(self.kinds))}")
        app = web.Application(client_max_size=s.door_max_body_bytes, middlewares=[self._errors, self._auth])
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=s.drain_grace_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.door_host, s.door_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        rt.on_close(self._runner.cleanup)
        log.info("OpenAI-compatible door on http://%s:%d/v1 (%d models, auth %s)", s.door_host, self.port,
                 len(self.kinds) + 1, "on" if s.door_api_keys else "off (loopback only)")

    # ------------------------------------------------------------------ middleware
    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except T.RequestError as exc:
            return _json(exc.body(), exc.status)
        except web.HTTPRequestEntityTooLarge:
            err = T.RequestError(413, "body_too_large", f"the body exceeds {self.settings.door_max_body_bytes} bytes")
            return _json(err.body(), 413)
        except web.HTTPException as exc:
            return _json(T.RequestError(exc.status, "http_error", exc.reason).body(), exc.status)

    @web.middleware
    async def _auth(self, request: web.Request, handler) -> web.StreamResponse:
        keys = self.settings.door_api_keys
        if keys:
            header = request.headers.get("Authorization", "")
            given = header[7:].strip() if header.lower().startswith("bearer ") else ""
            if not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
                self.m.requests.labels("-", "-", "unauthorized").inc()
                raise T.RequestError(401, "invalid_api_key", "missing or wrong API key (Authorization: Bearer KEY)")
        return await handler(request)

    # ------------------------------------------------------------------ routes
    async def models(self, request: web.Request) -> web.Response:
        return _json(T.models_body(sorted(self.kinds), int(time.time())))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            try:
                body = await request.json()
            except json.JSONDecodeError as exc:
                raise T.RequestError(400, "invalid_json", f"the body is not JSON: {exc}") from None
            req = T.parse_request(body, profiles=self.kinds, default_profile=self.settings.door_default_profile)
        except T.RequestError as exc:
            self.m.requests.labels("-", "-", exc.code).inc()  # "-": the model is unknown or unread (bounded labels)
            raise
        problem = T.to_problem(req)
        token = problem_id_var.set(problem.id)
        started = time.monotonic()
        stream = "true" if req.stream else "false"
        self.m.waiting.inc()
        log.info("waiting for the %s team's answer (up to %.0fs)", req.profile, self.settings.door_timeout_s)
        try:
            if req.stream:
                return await self._stream(request, req, problem)
            result = await self._solve(problem)
            self.m.tokens.labels(req.model).inc(T.usage(result)["total_tokens"])
            err = T.result_error(result)
            if err is not None:
                raise err  # counted once, by its code, below
            self.m.requests.labels(req.model, stream, "ok").inc()
            return _json(T.completion(result, req.model, int(time.time())))
        except T.RequestError as exc:
            self.m.requests.labels(req.model, stream, exc.code if exc.status < 500 else "error").inc()
            raise
        finally:
            self.m.waiting.dec()
            self.m.seconds.labels(stream).observe(time.monotonic() - started)
            problem_id_var.reset(token)

    async def _solve(self, problem, on_event=None) -> outcome_pb2.Result:
        try:
            return await solve(self._rt.nc, problem, on_event=on_event, timeout_s=self.settings.door_timeout_s,
                               reuse_existing=False)
        except NoIntake as exc:
            raise T.RequestError(503, SubmitError.UNAVAILABLE, str(exc)) from None
        except TimeoutError:
            raise T.RequestError(504, "timeout", f"no answer within {self.settings.door_timeout_s:.0f}s "
                                 f"(problem {problem.id}; its result will still land on conclave.results."
                                 f"{problem.id})") from None

    def _count(self, req: T.ChatRequest, result: outcome_pb2.Result) -> None:
        self.m.requests.labels(req.model, "true" if req.stream else "false",
                               "ok" if result.status == "ok" else "error").inc()
        self.m.tokens.labels(req.model).inc(T.usage(result)["total_tokens"])

    async def _stream(self, request: web.Request, req: T.ChatRequest, problem) -> web.StreamResponse:
        created = int(time.time())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        events: asyncio.Queue[outcome_pb2.ProgressEvent] = asyncio.Queue()
        solving = asyncio.create_task(self._solve(problem, on_event=events.put_nowait))
        await resp.write(_sse(T.chunk(problem.id, req.model, created, {"role": "assistant", "content": ""})))
        try:
            while not solving.done() or not events.empty():
                getter = asyncio.create_task(events.get())
                await asyncio.wait({getter, solving}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                text = event_text(getter.result())
                if text is not None:
                    delta = {"reasoning_content": text.plain + "\n"}
                    await resp.write(_sse(T.chunk(problem.id, req.model, created, delta)))
            result = solving.result()
        except T.RequestError as exc:
            self.m.requests.labels(req.model, "true", exc.code if exc.status < 500 else "error").inc()
            await resp.write(_sse(exc.body()))
            await resp.write(_sse("[DONE]"))
            return resp
        finally:
            if not solving.done():
                solving.cancel()  # the client went away; the problem itself runs on, on the bus
        self._count(req, result)
        err = T.result_error(result)
        if err is not None:
            await resp.write(_sse(err.body()))
        else:
            await resp.write(_sse(T.chunk(problem.id, req.model, created, {"content": result.answer})))
            await resp.write(_sse(T.chunk(problem.id, req.model, created, {}, "stop", conclave=T.extras(result))))
            if req.include_usage:
                await resp.write(_sse(T.usage_chunk(result, req.model, created)))
        await resp.write(_sse("[DONE]"))
        return resp


def build(settings: DoorSettings | None = None) -> DoorService:
    return DoorService(settings or DoorSettings())
