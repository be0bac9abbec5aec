"""Budget forcing, thinking prefill and the raw/visible split, with the scripted model over gRPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from conclave.v1 import agents_pb2, inference_pb2
from services.inference.backends.base import PodError
from services.inference.backends.scripted import ScriptedBackend, ScriptRule, tokens
from tests.inference_helpers.gateway import chat, running_gateway

THINKING = " ".join(f"step{i}" for i in range(2000))  # more thought than any budget below
ANSWER = "The answer is 42."


def script(answer: str = ANSWER, thinking: str = THINKING) -> list[ScriptRule]:
    return [
        ScriptRule(pattern="ponder", response=f"<think>\n{thinking}\n</think>\n{answer}"),
        ScriptRule(pattern="quick", response=f"<think>\nshort thought\n</think>\n{answer}"),
        ScriptRule(pattern="plain", response=answer),
    ]


def reasoning_request(text: str, max_tokens: int, margin: int = 200) -> inference_pb2.GenerateRequest:
    req = chat(text, max_tokens)
    req.reasoning.prefill_think = True
    req.reasoning.budget_forcing = True
    req.reasoning.force_margin = margin
    return req


def gateway(backend: ScriptedBackend, context_length: int = 4096):  # type: ignore[no-untyped-def]
    return running_gateway(backend=backend, context_length=context_length)


async def test_forcing_closes_thinking_and_bounds_the_answer() -> None:
    backend = ScriptedBackend(script())
    async with gateway(backend) as gw:
        chunks, usage = await gw.generate(reasoning_request("ponder this", 500))
    # 500 - 200 tokens of thinking, then `</think>` and the answer within min(4096-500, 250) tokens.
    assert usage.raw_text == "".join(chunks)
    assert usage.raw_text.startswith("<think>\nstep0 step1")
    assert usage.raw_text.endswith(f"step298 step299</think>\n{ANSWER}")
    assert usage.visible_text == ANSWER
    assert usage.extra_tokens == len(tokens(ANSWER)) == 4
    assert usage.completion_tokens == 300 + 4
    assert usage.finish_reason == "stop"
    # The second call continued from the prompt plus the text so far, closed by the gateway.
    first, second = backend.calls
    assert first.assistant_prefix == "<think>\n" and first.max_tokens == 300
    assert second.assistant_prefix.endswith("step299</think>\n")
    assert second.max_tokens == 250


async def test_forced_answer_is_bounded_by_half_the_budget() -> None:
    long_answer = " ".join(f"word{i}" for i in range(1000))
    async with gateway(ScriptedBackend(script(answer=long_answer))) as gw:
        _, usage = await gw.generate(reasoning_request("ponder this", 500))
    assert usage.extra_tokens == 250  # min(context - max_tokens, max_tokens / 2)
    assert usage.completion_tokens == 300 + 250
    assert usage.finish_reason == "length"
    assert usage.visible_text.startswith("word0 word1") and len(tokens(usage.visible_text)) == 250


async def test_forced_answer_is_bounded_by_the_context() -> None:
    long_answer = " ".join(f"word{i}" for i in range(1000))
    long_prompt = "ponder " + " ".join(f"fact{i}" for i in range(200))
    async with gateway(ScriptedBackend(script(answer=long_answer)), context_length=620) as gw:
        _, usage = await gw.generate(reasoning_request(long_prompt, 500))
    # min(620 - 500, 250) = 120, clamped further to what the context holds after the prompt and the
    # 300 thinking tokens (less 8 tokens of slack for the closing tag).
    assert usage.extra_tokens == 620 - usage.prompt_tokens - 300 - 8 < 120
    assert usage.prompt_tokens + usage.completion_tokens <= 620


async def test_small_budgets_keep_half_for_thinking() -> None:
    backend = ScriptedBackend(script())
    async with gateway(backend) as gw:
        _, usage = await gw.generate(reasoning_request("ponder this", 100))
    # A margin of 200 would leave nothing of a 100-token budget: it is capped at half.
    assert backend.calls[0].max_tokens == 50
    assert usage.extra_tokens == 4 and usage.completion_tokens == 54


async def test_thinking_that_closes_in_time_is_not_forced() -> None:
    backend = ScriptedBackend(script())
    async with gateway(backend) as gw:
        _, usage = await gw.generate(reasoning_request("quick one", 500))
    assert usage.extra_tokens == 0
    assert usage.raw_text == f"<think>\nshort thought\n</think>\n{ANSWER}"
    assert usage.visible_text == ANSWER
    assert len(backend.calls) == 1


async def test_long_answer_after_closed_thinking_uses_the_margin_not_extra() -> None:
    long_answer = " ".join(f"word{i}" for i in range(1000))
    backend = ScriptedBackend(script(answer=long_answer))
    async with gateway(backend) as gw:
        _, usage = await gw.generate(reasoning_request("quick one", 500))
    # The first segment stops at 300 tokens with thinking closed: the rest of max_tokens continues it.
    assert len(backend.calls) == 2
    assert backend.calls[1].max_tokens == 200
    assert usage.completion_tokens == 500
    assert usage.extra_tokens == 0
    assert usage.finish_reason == "length"


async def test_no_thinking_means_visible_equals_raw() -> None:
    async with gateway(ScriptedBackend(script())) as gw:
        _, usage = await gw.generate(chat("plain please", 50))
    assert usage.raw_text == usage.visible_text == ANSWER
    assert usage.extra_tokens == 0


async def test_unclosed_thinking_without_forcing_has_no_visible_text() -> None:
    async with gateway(ScriptedBackend(script())) as gw:
        req = chat("ponder this", 20)
        req.reasoning.prefill_think = True
        _, usage = await gw.generate(req)
    assert usage.raw_text.startswith("<think>\n")
    assert usage.completion_tokens == 20 and usage.finish_reason == "length"
    assert usage.visible_text == ""


async def test_scripted_latency_and_roles() -> None:
    backend = ScriptedBackend([ScriptRule("critic says no", role="critic"), ScriptRule("anyone")], latency_s=0.05)
    async with gateway(backend) as gw:
        _, critic = await gw.generate(chat("x", 10, role=agents_pb2.ROLE_CRITIC))
        _, solver = await gw.generate(chat("x", 10, role=agents_pb2.ROLE_SOLVER))
    assert critic.raw_text == "critic says no" and solver.raw_text == "anyone"
    assert critic.ttft_s >= 0.05


async def test_invalid_requests_are_refused() -> None:
    async with gateway(ScriptedBackend(script())) as gw:
        for req in (chat("x", 0), inference_pb2.GenerateRequest(max_tokens=5),
                    inference_pb2.GenerateRequest(prompt="a", messages=chat("b", 1).messages, max_tokens=5)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await gw.generate(req)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_deadline_is_enforced() -> None:
    async with gateway(ScriptedBackend(script(), token_latency_s=0.05)) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gw.generate(chat("plain", 50, deadline_s=0.1))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(0)
        assert gw.metric("conclave_inference_in_flight", backend="local") == 0


async def test_failover_and_no_retry_after_first_token() -> None:
    backend = ScriptedBackend(script())
    async with running_gateway(pods=["scripted://a", "scripted://b"], backend=backend,
                               health_interval_s=30.0) as gw:
        backend.down.add("a")
        pods = set()
        for i in range(6):
            _, usage = await gw.generate(chat("plain", 5, session_key=f"k{i}"))
            pods.add(usage.pod)
        assert pods == {"b"}
        assert gw.metric("conclave_inference_retries_total", backend="a") == 1
        assert gw.metric("conclave_inference_pod_healthy", backend="a") == 0
        # A health probe after the backoff brings it back.
        backend.down.clear()
        await gw.app.health.probe(gw.app.pool.get("a"))  # type: ignore[arg-type]
        assert gw.metric("conclave_inference_pod_healthy", backend="a") == 1


class _DiesMidStream(ScriptedBackend):
    """Pod "a" breaks after its second token."""

    async def stream(self, req, pod):  # type: ignore[no-untyped-def]
        n = 0
        async for chunk in super().stream(req, pod):
            if pod.name == "a" and n == 2:
                raise PodError("a: connection reset (scripted)", retryable=True)
            n += 1
            yield chunk


async def test_failure_after_the_first_token_is_not_retried() -> None:
    backend = _DiesMidStream(script())
    async with running_gateway(pods=["scripted://a", "scripted://b"], backend=backend,
                               health_interval_s=30.0) as gw:
        key = next(f"k{i}" for i in range(100) if gw.app.router.home(f"k{i}").name == "a")  # type: ignore[union-attr]
        received: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for resp in gw.stub.Generate(chat("plain", 10, session_key=key), timeout=10):
                received.append(resp.text)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "after the first token" in (err.value.details() or "")
        assert "".join(received) == "The answer"  # what was streamed before the pod died arrived
        assert len(backend.calls) == 1
        assert gw.metric("conclave_inference_retries_total", backend="a") == 0
