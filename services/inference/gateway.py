"""The gateway's request path, free of gRPC: route -> admit -> stream (with failover before the first
token) -> budget forcing -> ledger -> metrics. `server.py` maps it to and from protobuf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from conclave.v1 import agents_pb2
from services.inference import admission, failures, spans
from services.inference.backends.base import Backend, GenRequest, PodError, PodUsage
from services.inference.budget import (
    ReasoningSpec,
    answer_allowance,
    extra_allowance,
    first_segment_tokens,
    thinking_open,
    visible_text,
)
from services.inference.ledger import CeilingReached, Ledger, LedgerConflict, Reservation
from services.inference.metrics import InferenceMetrics
from services.inference.pods import Pod, PodPool
from services.inference.router import Router, affinity_key, placement
from services.runtime.tracing import traceparent_of

log = logging.getLogger(__name__)

_END = object()  # a segment that generated no text at all


class GatewayError(Exception):
    """A call that cannot be served; `code` is the gRPC status name the client gets, `reason` the typed
    FailureReason it gets with it (by default the one the code implies)."""

    OUTCOMES = {"RESOURCE_EXHAUSTED": "rejected", "FAILED_PRECONDITION": "ceiling", "INVALID_ARGUMENT": "invalid",
                "DEADLINE_EXCEEDED": "deadline"}

    def __init__(self, code: str, message: str, reason: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = failures.for_code(code) if reason is None else reason

    @property
    def outcome(self) -> str:
        return self.OUTCOMES.get(self.code, "error")


@dataclass(slots=True)
class Call:
    req: GenRequest
    session_key: str = ""
    priority: int = 0
    reasoning: ReasoningSpec | None = None
    role: str = "unspecified"
    ledger_key: str = ""
    traceparent: str = ""


@dataclass(slots=True)
class Result:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    ttft_s: float
    total_s: float
    pod: str
    extra_tokens: int
    raw_text: str
    visible_text: str
    model: str


@dataclass(frozen=True)
class GatewayConfig:
    limit: int = 4
    queue_limit: int = 16
    max_attempts: int = 3
    context_length: int = 4096
    chars_per_token: float = 3.5
    # Worst-case tokens of one call without a ledger_key (nothing else bounds what such a caller spends).
    unledgered_max_tokens: int = 49152


@dataclass(slots=True)
class _Segment:
    pod: Pod | None = None
    usage: PodUsage | None = None


@dataclass(slots=True)
class _Progress:
    """What a call has streamed so far, across its segments: the text, and the timing its metrics need."""

    t0: float
    # Text that goes out with the next chunk (the thinking prefill), so that TTFT stays honest.
    pending: str = ""
    parts: list[str] = field(default_factory=list)
    ttft: float = 0.0
    t_last: float = 0.0
    chunks: int = 0

    def take(self, text: str) -> str:
        """One generated chunk, with any pending text before it: timed, kept, and returned to stream."""
        if self.pending:
            text, self.pending = self.pending + text, ""
        self.t_last = time.perf_counter()
        if not self.chunks:
            self.ttft = self.t_last - self.t0
        self.chunks += 1
        self.parts.append(text)
        return text

    def insert(self, text: str) -> str:
        """Text the gateway adds itself (the forced end of thinking): kept and streamed, not timed."""
        text, self.pending = self.pending + text, ""
        self.parts.append(text)
        return text

    @property
    def raw(self) -> str:
        return self.pending + "".join(self.parts)


@dataclass
class Gateway:
    backend: Backend
    pool: PodPool
    router: Router
    metrics: InferenceMetrics
    config: GatewayConfig
    ledger: Ledger | None = None
    known_models: set[str] = field(default_factory=set)
    # Mutable: with DNS discovery the pods (and so the default model) may appear after start-up.
    default_model: str = ""
    # Reservations on their way to the ledger; and whether the next one may run beside its pod request
    # (false after a reservation failed for want of the ledger, until one succeeds).
    _reservations: set[asyncio.Future[Reservation | None]] = field(default_factory=set, init=False, repr=False)
    _overlap_reservations: bool = field(default=True, init=False, repr=False)

    def learn_models(self, pools_models: set[str]) -> None:
        self.known_models |= pools_models
        if not self.default_model and pools_models:
            self.default_model = sorted(pools_models)[0]

    def _model_label(self, model: str) -> str:
        return model if model in self.known_models else "other"

    async def generate(self, call: Call) -> AsyncIterator[str | Result]:
        """Yields text chunks (raw: thinking and forced tags included), then one Result."""
        t0 = time.perf_counter()
        req = call.req
        if not req.model:
            req.model = self.default_model
        spec = call.reasoning
        label = self._model_label(req.model)
        reservation: Reservation | None = None
        # The ledger's round trip runs beside the pod's start instead of before it (`_confirmed`). Until
        # `reservation` holds what it reserved, `reserving` is set, and a call that ends first settles it
        # when it lands (it is never cancelled: a write may land without its answer).
        reserving: asyncio.Future[Reservation | None] | None = None
        progress = _Progress(t0)
        outcome = "error"
        result: Result | None = None
        # Explicit contexts, not the current one: coalesce() runs this generator in a task of its own.
        span = spans.gateway_span(call.traceparent, call.role, label)
        try:
            if call.ledger_key:
                reserving = self._start_reservation(call)
                if not self._overlap_reservations:
                    # The last reservation failed (the ledger may be away): this one goes first, so that a
                    # call that cannot be accounted holds no pod slot while it waits for the ledger.
                    reservation, reserving = await asyncio.shield(reserving), None
            else:
                self._check_unledgered(call)
            # The thinking prefill goes out with the first generated chunk, so TTFT stays honest.
            progress.pending = spec.think_open + "\n" if spec is not None and spec.prefill_think else ""
            seg1_req = replace(req, assistant_prefix=req.assistant_prefix + progress.pending,
                               max_tokens=first_segment_tokens(req.max_tokens, spec))
            seg1 = _Segment()
            async with contextlib.aclosing(self._segment(seg1_req, call, seg1, None, span)) as texts:
                if reserving is not None:
                    reservation, first = await self._confirmed(reserving, texts)
                    reserving = None
                    if first is not _END:
                        yield progress.take(first)  # type: ignore[arg-type]
                async for text in texts:
                    yield progress.take(text)
            assert seg1.usage is not None and seg1.pod is not None
            prompt_tokens, generated, finish = seg1.usage.prompt_tokens, seg1.usage.completion_tokens, \
                seg1.usage.finish_reason
            pod, extra = seg1.pod, 0
            if spec is not None and spec.budget_forcing and finish == "length" and seg1_req.max_tokens < req.max_tokens:
                forced = thinking_open(progress.raw, spec)
                if forced:
                    allowance = answer_allowance(req.max_tokens, self.config.context_length, prompt_tokens, generated)
                    self.metrics.forced.labels(label).inc()
                    yield progress.insert(spec.think_close + "\n")
                else:
                    allowance = req.max_tokens - generated
                if allowance > 0:
                    seg2 = _Segment()
                    seg2_req = replace(req, assistant_prefix=req.assistant_prefix + progress.raw, max_tokens=allowance)
                    # Same pod as the first segment when it can take it: its cache holds the whole prefix.
                    async with contextlib.aclosing(self._segment(seg2_req, call, seg2, seg1.pod, span)) as texts:
                        async for text in texts:
                            yield progress.take(text)
                    assert seg2.usage is not None and seg2.pod is not None
                    generated += seg2.usage.completion_tokens
                    finish, pod = seg2.usage.finish_reason, seg2.pod
                    if forced:
                        extra = seg2.usage.completion_tokens
            raw_text = progress.raw
            result = Result(
                prompt_tokens=prompt_tokens, completion_tokens=generated, finish_reason=finish, ttft_s=progress.ttft,
                total_s=time.perf_counter() - t0, pod=pod.name, extra_tokens=extra, raw_text=raw_text,
                visible_text=visible_text(raw_text, spec) if spec is not None and spec.active else raw_text,
                model=req.model,
            )
            if reservation is not None:
                # Settled off the caller's path (ledger.py: commit_later): until then the call's worst
                # case stays reserved, so the entry over-counts for a while and never under-counts.
                self._settle_later(reservation, prompt_tokens + generated)
                reservation = None
            outcome = "ok"
            yield result
        except GatewayError as exc:
            outcome = exc.outcome
            raise
        except (GeneratorExit, asyncio.CancelledError):
            if outcome != "ok":  # closing after the Result was taken is a normal end
                outcome = "cancelled"
            raise
        finally:
            # Cancelled or failed: count what the pod did produce (one streamed delta is one token), free
            # the rest. Later, because a cancelled task cannot await reliably.
            used = self._estimate_prompt(call) + progress.chunks if progress.chunks else 0
            if reservation is not None:
                self._settle_later(reservation, used)
            if reserving is not None:  # the call ended before its reservation landed
                reserving.add_done_callback(lambda done: self._settle_landed(done, used))
            self._observe(call, label, outcome, result, t0, progress.ttft, progress.t_last, progress.chunks)
            spans.end_gateway_span(span, outcome, result)

    async def _confirmed(self, reserving: asyncio.Future[Reservation | None], texts: AsyncIterator[str]
                         ) -> tuple[Reservation | None, object]:
        """The reservation, and the first text of `texts` (or _END), each waiting for the other. A
        refusal wins: it ends the call as soon as it comes, before or after the first text and whatever
        the pod did meanwhile (the caller's aclosing closes the pod's request); the pod may have prefilled
        the prompt and generated a round trip's worth of tokens that no entry counts."""
        first = asyncio.ensure_future(anext(texts, _END))
        try:
            await asyncio.wait((reserving, first), return_when=asyncio.FIRST_COMPLETED)
            reservation = await asyncio.shield(reserving)
            return reservation, await first
        finally:
            if not first.done():
                # Refused first: stop the pod's attempt; `texts` must not be running when it is closed.
                first.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await first
            elif not first.cancelled():
                first.exception()  # retrieved: a pod error that lost to a refusal is not logged as unseen

    def _start_reservation(self, call: Call) -> asyncio.Future[Reservation | None]:
        task = asyncio.ensure_future(self._reserve(call))
        # Held here, not only by the call: `settled()` waits for those still on their way at shutdown.
        self._reservations.add(task)
        task.add_done_callback(self._reservations.discard)
        return task

    async def _segment(self, req: GenRequest, call: Call, seg: _Segment, prefer: Pod | None,
                       span: spans.Span) -> AsyncIterator[str]:
        """One generation on one pod; moves to another pod if a pod fails before the first token."""
        tried: set[Pod] = set()
        last_error: PodError | None = None
        key = affinity_key(call.session_key, req)
        for attempt in range(self.config.max_attempts):
            candidates = self.router.candidates(key, tried, prefer)
            if not candidates:
                break
            try:
                pod = await admission.acquire(candidates, call.priority, n_pods=len(candidates),
                                              limit=self.config.limit, queue_limit=self.config.queue_limit)
            except admission.Rejected as exc:
                self.metrics.rejections.labels("admission").inc()
                raise GatewayError("RESOURCE_EXHAUSTED", str(exc)) from None
            if prefer is None:  # a call's first segment; a continuation follows it to its pod
                self.metrics.routed.labels(*placement(key, candidates[0], pod)).inc()
            started = False
            pod_span = spans.pod_span(span, pod.name, attempt + 1)
            pod_outcome = "error"
            try:
                stream = self.backend.stream(replace(req, traceparent=traceparent_of(pod_span)), pod)
                try:
                    async for chunk in stream:
                        if chunk.usage is not None:
                            seg.usage, seg.pod = chunk.usage, pod
                        elif chunk.text:
                            started = True
                            yield chunk.text
                finally:
                    await stream.aclose()  # type: ignore[attr-defined]
                if seg.usage is None:
                    raise PodError(f"{pod.name}: stream ended without usage", retryable=False)
                pod_outcome = "ok"
                return
            except PodError as exc:
                if started:
                    raise GatewayError("UNAVAILABLE", f"pod {pod.name} failed after the first token (not "
                                       f"retried: the text already streamed): {exc}") from exc
                if not exc.retryable:
                    code = "INVALID_ARGUMENT" if exc.status is not None and 400 <= exc.status < 500 else "INTERNAL"
                    raise GatewayError(code, str(exc)) from exc
                last_error = exc
                tried.add(pod)
                self.metrics.retries.labels(pod.name).inc()
                pod_outcome = "retried"
                if exc.status != 429:
                    self.pool.eject(pod, str(exc))
                    self.metrics.ejections.labels(pod.name).inc()
                    pod_outcome = "ejected"
                log.warning("pod failed before the first token; trying another",
                            extra={"pod": pod.name, "error": str(exc), "traceparent": call.traceparent})
            finally:
                pod.slots.release()
                spans.end_pod_span(pod_span, pod_outcome, seg.usage)
        if last_error is None:
            self.metrics.rejections.labels("no_pods").inc()
            raise GatewayError("UNAVAILABLE", f"no healthy pod among {len(self.pool)}; retry later")
        raise GatewayError("UNAVAILABLE", f"no pod could serve the call after {len(tried)} attempts: {last_error}")

    def _estimate_prompt(self, call: Call) -> int:
        req = call.req
        chars = len(req.prompt) + sum(len(m.content) + 8 for m in req.messages)
        return int(chars / self.config.chars_per_token) + 1

    def _worst_case(self, call: Call) -> int:
        tokens = self._estimate_prompt(call) + call.req.max_tokens
        if call.reasoning is not None and call.reasoning.budget_forcing:
            tokens += extra_allowance(call.req.max_tokens, self.config.context_length)
        return tokens

    def _check_unledgered(self, call: Call) -> None:
        tokens, ceiling = self._worst_case(call), self.config.unledgered_max_tokens
        if tokens > ceiling:
            self.metrics.rejections.labels("unledgered_ceiling").inc()
            raise GatewayError("FAILED_PRECONDITION", f"token ceiling reached: a call without a ledger_key may use "
                               f"at most {ceiling} tokens, this one up to {tokens}; lower max_tokens or pass the "
                               "ledger_key of a problem", reason=agents_pb2.FAILURE_REASON_BUDGET_EXHAUSTED)

    async def _reserve(self, call: Call) -> Reservation | None:
        if self.ledger is None:
            log.warning("ledger_key given but the gateway has no ledger; not accounted",
                        extra={"traceparent": call.traceparent})
            return None
        try:
            reservation = await self.ledger.reserve(call.ledger_key, self._worst_case(call))
        except CeilingReached as exc:
            self._overlap_reservations = True
            self.metrics.rejections.labels("ceiling").inc()
            raise GatewayError("FAILED_PRECONDITION", str(exc)) from None
        except LedgerConflict as exc:
            raise GatewayError("UNAVAILABLE", str(exc)) from None
        except Exception as exc:  # KV unavailable, invalid key
            self._overlap_reservations = False
            raise GatewayError("UNAVAILABLE", f"token ledger unavailable: {exc!r}") from exc
        self._overlap_reservations = True
        return reservation

    def _settle_landed(self, reserving: asyncio.Future[Reservation | None], used: int) -> None:
        if reserving.cancelled() or reserving.exception() is not None:
            return  # nothing reserved (a refusal was the call's error, or it ended first)
        reservation = reserving.result()
        if reservation is not None:
            self._settle_later(reservation, used)

    def _settle_later(self, reservation: Reservation, used: int) -> None:
        assert self.ledger is not None
        self.ledger.commit_later(reservation, used)

    async def settled(self) -> None:
        """Writes the ledger settlements still pending (before the process stops)."""
        if self._reservations:
            await asyncio.gather(*self._reservations, return_exceptions=True)
            await asyncio.sleep(0)  # their calls' settlements (done callbacks) are queued now
        if self.ledger is not None:
            await self.ledger.settle_all()

    def _observe(self, call: Call, label: str, outcome: str, result: Result | None, t0: float, ttft: float,
                 t_last: float, n_chunks: int) -> None:
        m = self.metrics
        m.requests.labels(label, call.role, outcome).inc()
        m.e2e.labels(label, call.role).observe(time.perf_counter() - t0)
        if n_chunks:
            m.ttft.labels(label).observe(ttft)
            if n_chunks > 1:
                m.inter_token.labels(label).observe((t_last - t0 - ttft) / (n_chunks - 1))
        if result is not None:
            m.prompt_tokens.labels(label, call.role).inc(result.prompt_tokens)
            m.completion_tokens.labels(label, call.role).inc(result.completion_tokens)
            if result.extra_tokens:
                m.extra_tokens.labels(label, call.role).inc(result.extra_tokens)
        if outcome != "ok" and outcome != "cancelled":
            log.info("call failed", extra={"outcome": outcome, "role": call.role, "traceparent": call.traceparent})
        elif log.isEnabledFor(logging.DEBUG) and result is not None:
            log.debug("call done", extra={"pod": result.pod, "role": call.role, "prompt_tokens": result.prompt_tokens,
                                          "completion_tokens": result.completion_tokens, "ttft_s": round(ttft, 4),
                                          "finish": result.finish_reason, "traceparent": call.traceparent})
