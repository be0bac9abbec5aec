"""The agents' side of the inference gateway: one gRPC call per model call, answered by one message (the
request sets final_only: the Usage carries the whole text, so no text chunks are sent)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc

from conclave.v1 import agents_pb2, inference_pb2, inference_pb2_grpc
from services.inference import failures
from services.runtime.tracing import grpc_client_span

# The full gRPC method name: the client span's name, as OTel's gRPC instrumentation names it.
GENERATE = "/conclave.v1.Inference/Generate"


class LlmError(RuntimeError):
    """The gateway could not serve the call; `code` is the gRPC status name, `reason` the typed
    FailureReason callers act on (services/inference/failures.py)."""

    def __init__(self, code: str, message: str, reason: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reason = failures.for_code(code) if reason is None else reason


@dataclass
class Completion:
    raw_text: str
    visible_text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    pod: str
    seconds: float
    ttft_s: float = 0.0


@dataclass
class CallOptions:
    max_tokens: int
    # The gRPC deadline of the whole stream (RuntimeSettings.model_call_timeout_s).
    timeout_s: float
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    session_key: str = ""
    ledger_key: str = ""
    role: int = agents_pb2.ROLE_UNSPECIFIED
    reasoning: bool = False
    model: str = ""


class LlmClient:
    """A long-lived channel to the gateway; `generate` is safe to call concurrently."""

    def __init__(self, address: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.address = address
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        self._channel = grpc.aio.secure_channel(address, credentials, options=options) \
            if credentials else grpc.aio.insecure_channel(address, options=options)
        self._stub = inference_pb2_grpc.InferenceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def generate(
        self, messages: list[tuple[str, str]], opts: CallOptions
    ) -> Completion:
        req = inference_pb2.GenerateRequest(
            model=opts.model,
            messages=[inference_pb2.ChatMessage(role=r, content=c) for r, c in messages],
            max_tokens=opts.max_tokens,
            stop=opts.stop,
            session_key=opts.session_key,
            ledger_key=opts.ledger_key,
            role=opts.role,
            # The whole text comes in the closing Usage; chunks would only cost messages.
            final_only=True,
        )
        if opts.temperature is not None:
            req.temperature = opts.temperature
        if opts.top_p is not None:
            req.top_p = opts.top_p
        if opts.seed is not None:
            req.seed = opts.seed
        if opts.reasoning:
            req.reasoning.prefill_think = True
            req.reasoning.budget_forcing = True
        started = time.perf_counter()
        chunks: list[str] = []
        usage: inference_pb2.Usage | None = None
        # A client span per call; its context goes to the gateway in the metadata.
        with grpc_client_span("llm", GENERATE) as metadata:
            try:
                # The deadline bounds the whole stream, not only its start.
                call = self._stub.Generate(req, timeout=opts.timeout_s, metadata=metadata)
                async for resp in call:
                    if resp.text:
                        chunks.append(resp.text)
                    if resp.HasField("usage"):
                        usage = resp.usage
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
                raise LlmError(code, exc.details() or "",
                               failures.from_metadata(exc.trailing_metadata(), code)) from exc
        raw = "".join(chunks)
        if usage is None:
            raise LlmError("INTERNAL", "the gateway closed the stream without a usage record",
                           agents_pb2.FAILURE_REASON_BAD_REPLY)
        return Completion(
            raw_text=usage.raw_text or raw,
            visible_text=usage.visible_text or usage.raw_text or raw,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            finish_reason=usage.finish_reason,
            pod=usage.pod,
            seconds=time.perf_counter() - started,
            ttft_s=usage.ttft_s,
        )
