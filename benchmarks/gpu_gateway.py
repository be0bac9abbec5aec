"""The inference gateway on a GPU: bare vLLM against the gateway in front of it, prefix-cache affinity, and the
in-process vLLM engine backend. Written for the lent GPU machine (docs/gpu.md says how it ran); it also runs on
a CPU against llama.cpp pods (--pod-cmd) to test its own logic.

    python benchmarks/gpu_gateway.py --steps 1234      # vllm serve pods: bare, gateway, affinity
    python benchmarks/gpu_gateway.py --steps 5         # the in-process engine backend (CONCLAVE_BACKEND=vllm)

Steps (one invocation runs the ones named in --steps):
  1. starts pod A (`vllm serve MODEL`, --pod-cmd) and, for step 4, pod B; waits for /health;
  2. bare pod A over HTTP: streaming /v1/chat/completions (httpx, ignore_eos), closed loops at each --levels
     concurrency -> completion tokens/s, client-side TTFT p50/p99;
  3. the same load through the gateway (InferenceApp, backend openai, pods=[A], in its own process, as
     deployed) over gRPC; modes alternate round by round so that drift hits both alike;
  4. multi-turn discussions through a gateway in front of pods A and B: each turn's prompt is the previous
     one plus new long messages; with session_key (consistent-hash affinity) against none (least-loaded
     routing); fresh text for every mode and round, so no mode profits from caches warmed by another;
  5. the in-process engine: a gateway process with backend=VllmEngineBackend.from_settings(...) first drives
     its own AsyncLLM directly (the bare baseline, in-process), then serves gRPC, and the same load goes
     through it.

Results: a table on stdout, and JSON in $OUT/gpu_gateway.json (and --state, which accumulates over calls, so
step 5 in a later call compares with step 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cell_cpu import CellCpu, mean_cores, snapshot  # noqa: E402
from benchmarks.common import REPO, Run, Sample, child_env, closed_loop, generate, pct, stream_chat, wait_http  # noqa: E402
from services.stack.natsd import die_with_parent, free_port  # noqa: E402

SCRIPT = str(Path(__file__).resolve())

DEFAULT_POD_CMD = (
    "{python} -m vllm.entrypoints.cli.main serve {model} --host 127.0.0.1 --port {port} "
    "--gpu-memory-utilization {mem} --kv-cache-memory-bytes {kv_bytes} --enable-prefix-caching "
    "--generation-config vllm --disable-uvicorn-access-log"
)
CPU_POD_CMD = "{python} -m services.inference.pod_llamacpp --model tiny --port {port} --parallel 8 --ctx 32768"

WORDS = (
    "graph node edge weight path cycle tree root leaf depth order sort merge split heap stack queue list array "
    "index value key hash table bucket prime modulo remainder divisor factor power square cube root integer "
    "rational real sum product series limit bound proof claim lemma theorem case induction base step assume "
    "contradiction therefore hence because since given let define consider suppose note observe check verify "
    "count choose arrange permute combine partition subset element set union intersection complement function "
    "domain range image inverse map compose derivative integral area volume length angle triangle circle radius "
    "chord tangent polygon vertex diagonal parallel perpendicular coordinate vector matrix determinant rank "
    "basis dimension probability event outcome expected variance random uniform independent condition answer "
    "result approach idea error fix agree disagree reviewer solver critic plan first second third next final "
    "small large even odd positive negative zero one two three four five six seven eight nine ten hundred"
).split()


# ----------------------------------------------------------------------------------------------- measurements

def summarize(run: Run) -> dict[str, Any]:
    s = run.samples
    ttfts = [x.ttft for x in s]
    tpot = [(x.total - x.ttft) / (x.tokens - 1) for x in s if x.tokens > 1]
    out = {
        "requests": len(s),
        "tokens": sum(x.tokens for x in s),
        "wall_s": round(run.wall, 4),
        "tokens_per_s": round(sum(x.tokens for x in s) / run.wall, 1) if run.wall else None,
        "ttft_p50_ms": round(pct(ttfts, 0.5) * 1000, 2),
        "ttft_p99_ms": round(pct(ttfts, 0.99) * 1000, 2),
        "ttft_mean_ms": round(statistics.fmean(ttfts) * 1000, 2) if ttfts else None,
        "tokens_per_request": round(statistics.fmean(x.tokens for x in s), 1) if s else None,
        "tpot_p50_ms": round(pct(tpot, 0.5) * 1000, 3) if tpot else None,
    }
    server = [x.server_ttft for x in s if x.server_ttft]
    if server:
        out["gateway_ttft_p50_ms"] = round(pct(server, 0.5) * 1000, 2)
    return out


def make_prompts(n: int, words: int) -> list[list[tuple[str, str]]]:
    out = []
    for i in range(n):
        rng = random.Random(f"prompt-{i}")
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        out.append([("user", f"Task {i}: think about the following and answer at length. {text}")])
    return out


def requests_for(level: int, args: argparse.Namespace) -> int:
    return max(args.min_requests, args.waves * level)


# A way to run a closed loop: (concurrency, requests, max_tokens) -> Run.
Runner = Callable[[int, int, int], Awaitable[Run]]


def in_process(call: Callable[[int, int], Awaitable[Sample]]) -> Runner:
    async def run(concurrency: int, requests: int, max_tokens: int) -> Run:
        return await closed_loop(lambda i: call(i, max_tokens), requests, concurrency)

    return run


class ClientPool:
    """Load generators in worker processes (--client-child), so that one Python process parsing every stream
    does not cap what is measured: a closed loop of concurrency c is split over min(procs, c) workers, which
    start together at an agreed time; the cell's wall time runs from then to the last worker's end."""

    def __init__(self, kind: str, target: str, model: str, args: argparse.Namespace) -> None:
        self.kind, self.target, self.model, self.args = kind, target, model, args
        self.workers: list[asyncio.subprocess.Process] = []

    async def start(self) -> ClientPool:
        a = self.args
        argv = [sys.executable, SCRIPT, "--client-child", "--client-kind", self.kind,
                "--client-target", self.target, "--client-model", self.model, "--prompts", str(a.prompts),
                "--prompt-words", str(a.prompt_words), "--client-channels", str(a.client_channels),
                *([] if a.ignore_eos else ["--no-ignore-eos"])]
        for _ in range(a.client_procs):
            self.workers.append(await asyncio.create_subprocess_exec(
                *argv, cwd=REPO, env=child_env({}), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=64 << 20, preexec_fn=die_with_parent))
        for w in self.workers:
            line = await asyncio.wait_for(w.stdout.readline(), 120)  # type: ignore[union-attr]
            if line.strip() != b"ready":
                raise RuntimeError(f"client worker failed to start: {line[:300]!r}")
        return self

    async def run(self, concurrency: int, requests: int, max_tokens: int) -> Run:
        k = min(len(self.workers), concurrency, requests)
        start_at = time.time() + 0.3
        for i, w in enumerate(self.workers[:k]):
            cmd = {"c": concurrency // k + (i < concurrency % k), "n": requests // k + (i < requests % k),
                   "offset": i * requests, "max_tokens": max_tokens, "start_at": start_at}
            w.stdin.write(json.dumps(cmd).encode() + b"\n")  # type: ignore[union-attr]
            await w.stdin.drain()  # type: ignore[union-attr]
        lines = await asyncio.gather(*(w.stdout.readline() for w in self.workers[:k]))  # type: ignore[union-attr]
        run = Run()
        ends = []
        for line in lines:
            doc = json.loads(line)
            if "error" in doc:
                raise RuntimeError(f"client worker: {doc['error']}")
            run.samples += [Sample(*x) for x in doc["samples"]]
            ends.append(doc["t_end"])
        run.wall = max(ends) - start_at
        return run

    async def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.stdin.write(b"quit\n")  # type: ignore[union-attr]
                await w.stdin.drain()  # type: ignore[union-attr]
        for w in self.workers:
            try:
                await asyncio.wait_for(w.wait(), 10)
            except TimeoutError:
                w.kill()
                await w.wait()


async def client_child(args: argparse.Namespace) -> None:
    prompts = make_prompts(args.prompts, args.prompt_words)
    client = None
    channels: list[Any] = []
    if args.client_kind == "http":
        import httpx

        client = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10), limits=httpx.Limits(
            max_connections=None, max_keepalive_connections=512, keepalive_expiry=30))

        def call(i: int, max_tokens: int) -> Awaitable[Sample]:
            return stream_chat(client, args.client_target, prompts[i % len(prompts)], max_tokens,
                               model=args.client_model, ignore_eos=args.ignore_eos)
    else:
        import grpc

        from conclave.v1 import inference_pb2_grpc

        # Several connections, not one: a gateway with N workers shares its port (SO_REUSEPORT) and the kernel
        # spreads connections over them, not streams. A local subchannel pool per channel keeps gRPC from
        # sharing one connection among channels to the same target.
        channels = [grpc.aio.insecure_channel(args.client_target, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(max(1, args.client_channels))]
        stubs = [inference_pb2_grpc.InferenceStub(c) for c in channels]

        def call(i: int, max_tokens: int) -> Awaitable[Sample]:
            return generate(stubs[i % len(stubs)], prompts[i % len(prompts)], max_tokens)

    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            break
        cmd = json.loads(line)
        try:
            await asyncio.sleep(max(0.0, cmd["start_at"] - time.time()))
            off, mt = cmd["offset"], cmd["max_tokens"]
            run = await closed_loop(lambda i, off=off, mt=mt: call(i + off, mt), cmd["n"], cmd["c"])
            doc: dict[str, Any] = {"t_end": time.time(), "samples": [
                [s.ttft, s.tokens, s.total, s.pod, s.prompt_tokens, s.server_ttft] for s in run.samples]}
        except Exception as exc:
            doc = {"error": repr(exc)}
        print(json.dumps(doc), flush=True)
    if client is not None:
        await client.aclose()
    for c in channels:
        await c.close()


async def throughput(modes: dict[str, Runner], args: argparse.Namespace, log: Callable[[str], None],
                     so_far: dict[str, dict[str, Any]] | None = None,
                     cpu: CellCpu | None = None) -> dict[str, dict[str, Any]]:
    """Closed loops at each level for each mode, alternating the order round by round; `so_far` holds the
    rounds finished, for a run cut by its time budget. Each cell keeps its rounds apart too (`rounds`: their
    tokens/s, and with `cpu` the cores each role used), so a ratio's spread between rounds can be read."""
    warm = max(args.levels)
    for name, runner in modes.items():
        t0 = time.perf_counter()
        await runner(warm, 2 * warm, args.max_tokens)
        log(f"  warm-up {name}: {time.perf_counter() - t0:.1f}s")
    runs = {(m, c): Run() for m in modes for c in args.levels}
    rounds: dict[tuple[str, int], list[dict[str, Any]]] = {(m, c): [] for m in modes for c in args.levels}

    def summary() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for m in modes:
            out[m] = {}
            for c in args.levels:
                cell = summarize(runs[(m, c)]) | {"rounds": rounds[(m, c)]}
                if cpu is not None and rounds[(m, c)]:
                    cell["cores"] = mean_cores(rounds[(m, c)])
                out[m][str(c)] = cell
        return out

    for r in range(args.rounds):
        order = list(modes) if r % 2 == 0 else list(reversed(modes))
        for c in args.levels:
            for m in order:
                before = snapshot() if cpu is not None else {}
                run = await modes[m](c, requests_for(c, args), args.max_tokens)
                runs[(m, c)].add(run)
                cell = {"tokens_per_s": round(run.tokens_per_s, 1), "wall_s": round(run.wall, 3)}
                if cpu is not None:
                    cell["cores"] = cpu.cores(before, snapshot(), run.wall)
                rounds[(m, c)].append(cell)
        log(f"  round {r + 1}/{args.rounds} done")
        if so_far is not None:
            so_far.update(summary())
    return summary()


# ---------------------------------------------------------------------------------------------- discussions

SYSTEM = ("You are one agent of a team that solves a math problem together. Read the whole discussion, then "
          "add your own step: check the last claim, point out errors, and propose the next step.")


def discussion(seed: str, turns: int, first_words: int, reply_words: int, turn_words: int
               ) -> list[list[tuple[str, str]]]:
    """The prompt of each turn: the previous prompt plus a (fixed) reply and a new long message."""
    rng = random.Random(seed)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    messages = [("system", SYSTEM), ("user", f"Problem {seed}. {text(first_words)}")]
    prompts = [list(messages)]
    for t in range(1, turns):
        messages.append(("assistant", f"Step {t}: {text(reply_words)}"))
        messages.append(("user", f"Agent {t + 1} writes: {text(turn_words)}"))
        prompts.append(list(messages))
    return prompts


async def run_discussions(stub: Any, affinity: bool, tag: str, args: argparse.Namespace) -> list[list[Sample]]:
    async def one(d: int) -> list[Sample]:
        seed = f"{tag}-{d}"
        key = f"problem-{seed}" if affinity else ""
        out = []
        for prompt in discussion(seed, args.turns, args.first_words, args.reply_words, args.turn_words):
            out.append(await generate(stub, prompt, args.turn_tokens, session_key=key))
        return out

    return list(await asyncio.gather(*(one(d) for d in range(args.discussions))))


async def prefix_counters(client: Any, url: str) -> tuple[float, float] | None:
    """vLLM's prefix cache (hits, queries) counters in tokens, or None where the pod has none."""
    try:
        text = (await client.get(url + "/metrics", timeout=5)).text
    except Exception:
        return None
    hits = queries = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith("vllm:prefix_cache_hits_total"):
            hits += float(line.rsplit(" ", 1)[1])
            found = True
        elif line.startswith("vllm:prefix_cache_queries_total"):
            queries += float(line.rsplit(" ", 1)[1])
    return (hits, queries) if found else None


def summarize_discussions(all_runs: list[list[list[Sample]]], cache: dict[str, float] | None) -> dict[str, Any]:
    turns = len(all_runs[0][0])
    later = [s.ttft for run in all_runs for disc in run for s in disc[1:]]
    first = [disc[0].ttft for run in all_runs for disc in run]
    switches = sum(1 for run in all_runs for disc in run for a, b in zip(disc, disc[1:], strict=False) if a.pod != b.pod)
    pods: dict[str, int] = {}
    for run in all_runs:
        for disc in run:
            for s in disc:
                pods[s.pod] = pods.get(s.pod, 0) + 1
    out: dict[str, Any] = {
        "discussions": sum(len(run) for run in all_runs),
        "turn1_ttft_mean_ms": round(statistics.fmean(first) * 1000, 2),
        "turn1_ttft_p50_ms": round(pct(first, 0.5) * 1000, 2),
        "later_ttft_mean_ms": round(statistics.fmean(later) * 1000, 2),
        "later_ttft_p50_ms": round(pct(later, 0.5) * 1000, 2),
        "later_ttft_p99_ms": round(pct(later, 0.99) * 1000, 2),
        "per_turn_ttft_mean_ms": [round(statistics.fmean(disc[t].ttft for run in all_runs for disc in run) * 1000, 2)
                                  for t in range(turns)],
        "per_turn_prompt_tokens": [round(statistics.fmean(disc[t].prompt_tokens for run in all_runs for disc in run))
                                   for t in range(turns)],
        "pod_switches": switches,
        "pod_switch_rate": round(switches / max(1, sum(len(run) for run in all_runs) * (turns - 1)), 3),
        "calls_per_pod": pods,
    }
    if cache is not None:
        out.update(cache)
    return out


# ------------------------------------------------------------------------------------------------ processes

class Procs:
    """Everything this script starts, each in its own process group, killed by group id at the end."""

    def __init__(self, pidfile: Path, logdir: Path) -> None:
        self.pidfile = pidfile
        self.logdir = logdir
        self.items: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.reap_leftovers()

    def reap_leftovers(self) -> None:
        # Groups a previous run of this script started and could not stop (killed by a time limit).
        if not self.pidfile.exists():
            return
        for line in self.pidfile.read_text().split():
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.killpg(int(line), signal.SIGKILL)
                print(f"killed leftover process group {line}", flush=True)
        self.pidfile.unlink()

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.logdir / f"{name}.log"
        out = open(log, "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=die_with_parent)
        out.close()
        self.items.append((name, proc, log))
        with open(self.pidfile, "a") as f:
            f.write(f"{proc.pid}\n")
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> Path:
        return next(log for _, p, log in self.items if p is proc)

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 10) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group: vLLM's engine-core process too
        proc.wait()
        self.items = [(n, p, log) for n, p, log in self.items if p is not proc]
        if self.pidfile.exists():
            left = [ln for ln in self.pidfile.read_text().split() if ln != str(proc.pid)]
            self.pidfile.write_text("".join(f"{x}\n" for x in left))

    def stop_all(self) -> None:
        for _, proc, _ in reversed(list(self.items)):
            self.stop(proc)

    def tails(self, lines: int = 60) -> str:
        chunks = []
        for log in sorted(self.logdir.glob("*.log")):
            text = [ln for ln in log.read_text(errors="replace").splitlines() if "it/s]" not in ln and "\r" not in ln]
            chunks.append(f"===== {log.name} (last {lines} of {len(text)} lines)\n" + "\n".join(text[-lines:]))
        return "\n".join(chunks)


def start_gateway(procs: Procs, name: str, env: dict[str, str], args: argparse.Namespace,
                  extra_argv: list[str] = ()) -> tuple[subprocess.Popen[bytes], Path]:  # type: ignore[assignment]
    ready = procs.logdir / f"{name}.ready.json"
    ready.unlink(missing_ok=True)
    base = {"CONCLAVE_GRPC_PORT": "0", "CONCLAVE_POD_MAX_INFLIGHT": str(args.gateway_inflight),
            "CONCLAVE_POD_QUEUE_LIMIT": str(args.gateway_inflight), "CONCLAVE_LOG_LEVEL": "WARNING",
            "CONCLAVE_LOG_JSON": "false", "CONCLAVE_CONTEXT_LENGTH": str(args.context_length),
            "CONCLAVE_GATEWAY_WORKERS": str(args.gateway_workers)}
    argv = [sys.executable, str(Path(__file__).resolve()), "--gateway-child", "--ready-file", str(ready),
            *extra_argv]
    return procs.start(name, argv, child_env({**base, **env})), ready


async def wait_ready(ready: Path, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> dict[str, Any]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if ready.exists():  # noqa: ASYNC240 - tiny local files
            return json.loads(ready.read_text())  # noqa: ASYNC240 - tiny local files
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"gateway process exited with {proc.returncode}")
        await asyncio.sleep(0.2)
    raise RuntimeError(f"gateway not ready after {timeout_s:.0f}s")


# ------------------------------------------------------------------------------------------- gateway child

class _FakeTok:
    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(range(max(1, len(text) // 4)))


class _FakeEngine:
    """A stand-in for AsyncLLM, for testing this script's step 5 on a CPU (--fake-engine)."""

    def get_tokenizer(self) -> _FakeTok:
        return _FakeTok()

    async def generate(self, prompt: str, params: Any, request_id: str) -> Any:
        from types import SimpleNamespace as NS

        await asyncio.sleep(0.01)
        n = params["max_tokens"]
        for i in range(n):
            await asyncio.sleep(0.002)
            yield NS(prompt_token_ids=list(range(len(prompt) // 4)) if i == 0 else None,
                     outputs=[NS(text="x", token_ids=[i], finish_reason="length" if i == n - 1 else None)])

    async def check_health(self) -> None:
        return None

    def shutdown(self) -> None:
        return None


async def bare_engine(backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The baseline of step 5: the same load on the backend's own AsyncLLM, in this process, no gRPC."""
    from services.inference.backends.base import GenRequest, Message

    engine = backend._engine
    prompts = make_prompts(args.prompts, args.prompt_words)
    texts = [await backend._prompt(GenRequest(model="", messages=tuple(Message(r, c) for r, c in p)))
             for p in prompts]
    if args.fake_engine:
        def params(n: int) -> Any:
            return {"max_tokens": n}
    else:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        def params(n: int) -> Any:
            return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, output_kind=RequestOutputKind.DELTA)
    ids = iter(range(10**9))

    async def call(i: int, max_tokens: int) -> Sample:
        started = time.perf_counter()
        ttft = 0.0
        tokens = prompt_tokens = 0
        async for out in engine.generate(texts[i % len(texts)], params(max_tokens), f"bare-{next(ids)}"):
            if out.prompt_token_ids is not None:
                prompt_tokens = len(out.prompt_token_ids)
            comp = out.outputs[0]
            tokens += len(comp.token_ids)
            if comp.text and not ttft:
                ttft = time.perf_counter() - started
        return Sample(ttft, tokens, time.perf_counter() - started, "in-process", prompt_tokens)

    return (await throughput({"engine_bare": in_process(call)}, args,
                             lambda m: print(m, flush=True)))["engine_bare"]


async def gateway_child(args: argparse.Namespace) -> None:
    import logging

    from services.inference.app import InferenceApp
    from services.inference.settings import InferenceSettings
    from services.inference.workers import WorkerSet, worker_index

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = InferenceSettings()
    info: dict[str, Any] = {}
    backend = None
    if settings.backend == "vllm":
        from services.inference.backends.vllm_engine import VllmEngineBackend

        t0 = time.perf_counter()
        if args.fake_engine:
            backend = VllmEngineBackend(_FakeEngine(), settings.default_model or settings.vllm_model,
                                        sampling_params=lambda output_kind, **kw: kw, delta_kind="delta")
        else:
            # As the service builds it (make_backend), inside the running event loop.
            backend = VllmEngineBackend.from_settings(settings)
        info["engine_start_s"] = round(time.perf_counter() - t0, 1)
        print(f"engine ready in {info['engine_start_s']}s", flush=True)
        if args.bare_first:
            info["engine_bare"] = await bare_engine(backend, args)
    app = InferenceApp(settings, backend=backend)
    await app.start()
    upkeep = asyncio.create_task(app.background())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    info.update(port=app.port, backend=app.backend.kind, pods=[p.name for p in app.pool],
                models=sorted({m for p in app.pool for m in p.models}), workers=settings.gateway_workers)
    index, workers = worker_index(), None
    if index == 0 and settings.gateway_workers > 1:
        # Workers 1..N-1 share the port; ready once they all serve, so that the load spreads from the start.
        workers = WorkerSet.of_this_process(settings.gateway_workers, app.port, 0, "")
        await workers.start()
        for i in range(1, settings.gateway_workers):
            await wait_ready(Path(f"{args.ready_file}.w{i}"), None, 120)
    ready = args.ready_file if index == 0 else f"{args.ready_file}.w{index}"
    tmp = Path(ready + ".tmp")
    tmp.write_text(json.dumps(info))  # noqa: ASYNC240 - tiny local files
    tmp.rename(ready)  # noqa: ASYNC240 - tiny local files
    await stop.wait()
    if workers is not None:
        await workers.stop(0)
    upkeep.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await upkeep
    await app.close(0)


# --------------------------------------------------------------------------------------------- orchestrator

class Report:
    def __init__(self, args: argparse.Namespace) -> None:
        self.state = Path(args.state)
        self.out_dir = Path(args.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = json.loads(self.state.read_text()) if self.state.exists() else {}
        self.lines: list[str] = []
        self.t0 = time.monotonic()

    def log(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.lines.append(line)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def save(self) -> None:
        self.state.parent.mkdir(parents=True, exist_ok=True)
        self.state.write_text(json.dumps(self.data, indent=2))
        (self.out_dir / "gpu_gateway.json").write_text(json.dumps(self.data, indent=2))


def environment() -> dict[str, Any]:
    from importlib import metadata

    env: dict[str, Any] = {"python": sys.version.split()[0]}
    for dist in ("vllm", "torch", "transformers", "grpcio", "protobuf", "httpx", "pydantic", "xllamacpp"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            env[dist] = metadata.version(dist)
    with contextlib.suppress(Exception):
        env["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                     "--format=csv,noheader"], capture_output=True, text=True,
                                    timeout=20).stdout.strip()
    env["cpus"] = os.cpu_count()
    return env


def pod_argv(args: argparse.Namespace, port: int) -> list[str]:
    cmd = args.pod_cmd.format(python=shlex.quote(sys.executable), model=shlex.quote(args.model), port=port,
                              mem=args.pod_mem, kv_bytes=args.pod_kv_bytes)
    return shlex.split(cmd)


async def steps_1_to_4(args: argparse.Namespace, rep: Report, procs: Procs) -> None:
    import grpc
    import httpx

    from conclave.v1 import inference_pb2_grpc
    from services.inference.client import CallOptions, LlmClient

    steps = args.steps
    two = "4" in steps and not args.pod_url
    if args.pod_url:  # a pod that is already serving (gpurun's); none is started or stopped here
        ports, urls = {}, {"a": args.pod_url.rstrip("/")}
    else:
        ports = {"a": args.pod_port or free_port(), **({"b": free_port()} if two else {})}
        urls = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
    pods = {}
    for k, port in ports.items():  # started together: with --kv-cache-memory-bytes neither profiles memory
        env = child_env({"VLLM_CACHE_ROOT": f"/tmp/vllm-cache-{k}"})
        rep.log(f"starting pod {k}: {' '.join(pod_argv(args, port))}")
        pods[k] = procs.start(f"pod_{k}", pod_argv(args, port), env)
    startup = {}
    for k in pods:
        try:
            startup[k] = round(await wait_http(urls[k], pods[k], args.pod_timeout, procs.log_of(pods[k])), 1)
            rep.log(f"pod {k} healthy after {startup[k]}s")
        except RuntimeError as exc:
            rep.log(f"pod {k} FAILED: {exc}")
            if k == "a":
                raise
            rep.put("step4_error", f"pod b: {exc}")
            two = False
    rep.put("pod_startup_s", startup)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=512, keepalive_expiry=30)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10), limits=limits) as client:
        models = (await client.get(urls["a"] + "/v1/models")).json()["data"]
        model_id = models[0]["id"]
        rep.log(f"pod model id: {model_id}")
        config = {k: getattr(args, k) for k in ("levels", "rounds", "waves", "min_requests", "max_tokens",
                                                 "prompts", "prompt_words", "gateway_inflight", "client_procs",
                                                 "client_channels")}

        if "2" in steps or "3" in steps:
            pools = [await ClientPool("http", urls["a"], model_id, args).start()]
            modes: dict[str, Runner] = {"http_bare": pools[0].run}
            gw = None
            if "3" in steps:
                gw, ready = start_gateway(procs, "gateway_http", {"CONCLAVE_BACKEND": "openai",
                                                                  "CONCLAVE_PODS": urls["a"]}, args)
                info = await wait_ready(ready, gw, 120)
                rep.log(f"gateway (openai backend, pod a) on :{info['port']}, models {info['models']}")
                # The agents' own client, once, as plumbing proof.
                llm = LlmClient(f"127.0.0.1:{info['port']}")
                comp = await llm.generate([("user", "Say hello.")], CallOptions(max_tokens=16, timeout_s=60, session_key="p-1"))
                await llm.close()
                rep.put("llmclient_check", {"pod": comp.pod, "completion_tokens": comp.completion_tokens,
                                            "finish": comp.finish_reason, "ttft_s": round(comp.ttft_s, 4),
                                            "text_chars": len(comp.raw_text)})
                pools.append(await ClientPool("grpc", f"127.0.0.1:{info['port']}", "", args).start())
                modes["gateway_http"] = pools[-1].run
            rep.log(f"throughput: modes {list(modes)}, levels {args.levels}, {args.client_procs} client processes")
            # Each side's CPU per cell: is the gateway (or one of its workers) saturated, or the load generators?
            cpu = CellCpu()
            cpu.watch("bare_clients", [w.pid for w in pools[0].workers])
            if gw is not None:
                cpu.watch("gateway", [gw.pid])
                cpu.watch("gateway_clients", [w.pid for w in pools[-1].workers])
            so_far: dict[str, dict[str, Any]] = {}
            try:
                result = await throughput(modes, args, rep.log, so_far, cpu)
            except asyncio.CancelledError:  # the time budget: the rounds finished are kept
                rep.put("throughput", {"config": config, "results": so_far, "cut_by_budget": True})
                raise
            finally:
                for pool in pools:
                    await pool.close()
            rep.put("throughput", {"config": config, "results": result})
            if gw is not None:
                procs.stop(gw)

        if "4" in steps and two:
            gw, ready = start_gateway(procs, "gateway_two", {"CONCLAVE_BACKEND": "openai",
                                                             "CONCLAVE_PODS": f"{urls['a']},{urls['b']}"}, args)
            info = await wait_ready(ready, gw, 120)
            rep.log(f"gateway (openai backend, pods a+b) on :{info['port']}")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{info['port']}") as channel:
                stub = inference_pb2_grpc.InferenceStub(channel)
                variants = [("affinity", args.first_words, args.reply_words, args.turn_words)]
                if args.long_first_words:
                    variants.append(("affinity_long", args.long_first_words, args.long_reply_words,
                                     args.long_turn_words))
                for key, first, reply, turn in variants:
                    v = argparse.Namespace(**{**vars(args), "first_words": first, "reply_words": reply,
                                              "turn_words": turn})
                    rep.put(key, await affinity_bench(stub, client, list(urls.values()), v, key, rep.log))
            procs.stop(gw)


async def affinity_bench(stub: Any, client: Any, urls: list[str], args: argparse.Namespace, key: str,
                         log: Callable[[str], None]) -> dict[str, Any]:
    # Warm-up on text no measured discussion shares.
    await run_discussions(stub, False, f"{key}-warmup", argparse.Namespace(**{**vars(args), "turns": 2}))
    runs: dict[str, list[list[list[Sample]]]] = {"affinity": [], "least_loaded": []}
    hits = {m: [0.0, 0.0] for m in runs}
    for r in range(args.discussion_rounds):
        order = ["affinity", "least_loaded"] if r % 2 == 0 else ["least_loaded", "affinity"]
        for mode in order:
            before = [await prefix_counters(client, u) for u in urls]
            t0 = time.perf_counter()
            runs[mode].append(await run_discussions(stub, mode == "affinity", f"{key}-{mode}-r{r}", args))
            after = [await prefix_counters(client, u) for u in urls]
            if all(x is not None for x in before + after):
                for b, a in zip(before, after, strict=True):
                    hits[mode][0] += a[0] - b[0]  # type: ignore[index]
                    hits[mode][1] += a[1] - b[1]  # type: ignore[index]
            log(f"  {key}: {mode} round {r + 1}: {time.perf_counter() - t0:.1f}s")
    result = {}
    for mode, mode_runs in runs.items():
        h, q = hits[mode]
        cache = {"prefix_cache_hit_rate": round(h / q, 3), "prefix_cache_queried_tokens": int(q)} if q else None
        result[mode] = summarize_discussions(mode_runs, cache)
    config = {k: getattr(args, k) for k in ("discussions", "turns", "first_words", "reply_words", "turn_words",
                                             "turn_tokens", "discussion_rounds")}
    return {"config": config, "results": result}


async def step_5(args: argparse.Namespace, rep: Report, procs: Procs) -> None:
    env = {"CONCLAVE_BACKEND": "vllm", "CONCLAVE_GATEWAY_WORKERS": "1", "CONCLAVE_VLLM_MODEL": args.model,
           "CONCLAVE_VLLM_GPU_MEMORY_UTILIZATION": str(args.engine_mem),
           "VLLM_CACHE_ROOT": "/tmp/vllm-cache-a"}
    fwd = ["--levels", *map(str, args.levels), "--rounds", str(args.rounds), "--waves", str(args.waves),
           "--min-requests", str(args.min_requests), "--max-tokens", str(args.max_tokens),
           "--prompts", str(args.prompts), "--prompt-words", str(args.prompt_words), "--bare-first"]
    if args.fake_engine:
        fwd.append("--fake-engine")
    t0 = time.monotonic()
    rep.log("starting the gateway with the in-process vLLM engine (it measures its engine bare first)")
    gw, ready = start_gateway(procs, "gateway_engine", env, args, fwd)
    info = await wait_ready(ready, gw, args.pod_timeout)
    rep.log(f"engine gateway ready after {time.monotonic() - t0:.1f}s (engine start {info.get('engine_start_s')}s), "
            f"port {info['port']}, models {info['models']}")
    pool = await ClientPool("grpc", f"127.0.0.1:{info['port']}", "", args).start()
    try:
        result = await throughput({"gateway_engine": pool.run}, args, rep.log)
    finally:
        await pool.close()
    procs.stop(gw)
    rep.put("engine", {"engine_start_s": info.get("engine_start_s"), "gateway_ready_s": round(time.monotonic() - t0, 1),
                       "results": {"engine_bare": info["engine_bare"], **result}})


def table(data: dict[str, Any]) -> str:
    out = []
    rows: dict[str, dict[str, Any]] = {}
    if "throughput" in data:
        rows.update(data["throughput"]["results"])
    if "engine" in data:
        rows.update(data["engine"]["results"])
    if rows:
        cfg = data.get("throughput", {}).get("config") or {}
        out.append(f"\nThroughput: max_tokens={cfg.get('max_tokens', '?')}, closed loop at each concurrency "
                   f"(requests per cell = max(min_requests, waves*concurrency) x rounds)")
        out.append(f"{'mode':<16}{'conc':>5}{'reqs':>6}{'tok/req':>8}{'tokens/s':>10}{'TTFT p50 ms':>12}"
                   f"{'TTFT p99 ms':>12}{'TPOT p50 ms':>12}")
        levels = sorted({int(c) for r in rows.values() for c in r}, key=int)
        for c in levels:
            for mode, res in rows.items():
                s = res.get(str(c))
                if s:
                    out.append(f"{mode:<16}{c:>5}{s['requests']:>6}{s['tokens_per_request']:>8}"
                               f"{s['tokens_per_s']:>10}{s['ttft_p50_ms']:>12}{s['ttft_p99_ms']:>12}"
                               f"{s['tpot_p50_ms'] if s['tpot_p50_ms'] is not None else '-':>12}")
        out.append("")
        base = rows.get("http_bare")
        for mode, ref in (("gateway_http", "http_bare"), ("engine_bare", "http_bare"),
                          ("gateway_engine", "engine_bare"), ("gateway_engine", "http_bare")):
            if mode in rows and ref in rows:
                for c in levels:
                    a, b = rows[mode].get(str(c)), rows[ref].get(str(c))
                    if a and b:
                        out.append(f"{mode}/{ref} conc {c}: tokens/s ratio {a['tokens_per_s'] / b['tokens_per_s']:.3f}, "
                                   f"TTFT p50 {a['ttft_p50_ms'] - b['ttft_p50_ms']:+.2f} ms, "
                                   f"p99 {a['ttft_p99_ms'] - b['ttft_p99_ms']:+.2f} ms")
                        per_round = [x["tokens_per_s"] / y["tokens_per_s"]
                                     for x, y in zip(a.get("rounds", []), b.get("rounds", []), strict=False)]
                        if len(per_round) > 1:
                            out.append(f"  by round: {', '.join(f'{r:.3f}' for r in per_round)}")
                        if a.get("cores"):
                            out.append(f"  cores during {mode}: " + ", ".join(f"{k} {v}" for k, v in a["cores"].items()))
        del base
    for key in ("affinity", "affinity_long"):
        if key not in data:
            continue
        cfg = data[key]["config"]
        out.append(f"\nDiscussions ({key}): {cfg['discussions']} x {cfg['turns']} turns x {cfg['discussion_rounds']} "
                   f"rounds per mode, {cfg['turn_tokens']} tokens per turn, two pods")
        out.append(f"{'routing':<14}{'turn1 mean':>11}{'2..N mean':>10}{'2..N p50':>9}{'2..N p99':>9}"
                   f"{'switch':>7}{'cache hit':>10}  per-turn mean ms / prompt tokens / calls per pod")
        for mode, r in data[key]["results"].items():
            hit = r.get("prefix_cache_hit_rate")
            out.append(f"{mode:<14}{r['turn1_ttft_mean_ms']:>11}{r['later_ttft_mean_ms']:>10}{r['later_ttft_p50_ms']:>9}"
                       f"{r['later_ttft_p99_ms']:>9}{r['pod_switch_rate']:>7}{hit if hit is not None else '-':>10}  "
                       f"{r['per_turn_ttft_mean_ms']} / {r['per_turn_prompt_tokens']} / {r['calls_per_pod']}")
    return "\n".join(out)


async def orchestrate(args: argparse.Namespace) -> int:
    rep = Report(args)
    logdir = Path(args.log_dir)
    logdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - tiny local files
    procs = Procs(logdir / "pids", logdir)
    rep.data.setdefault("environment", environment())
    rep.data.setdefault("model", args.model)
    rep.log(f"environment: {rep.data['environment']}")
    rc = 0
    parts = (("steps 1-4", "1234", steps_1_to_4, "steps_1_4_error"), ("step 5", "5", step_5, "step5_error"))
    try:
        for name, numbers, part, error_key in parts:
            if not set(args.steps) & set(numbers):
                continue
            try:
                await asyncio.wait_for(part(args, rep, procs), args.budget_s)
            except Exception as exc:
                rc = 1
                rep.log(f"{name} FAILED: {exc!r}")
                rep.put(error_key, repr(exc))
            finally:
                procs.stop_all()
    finally:
        procs.stop_all()
        text = table(rep.data)
        print(text, flush=True)
        (rep.out_dir / "gpu_gateway.txt").write_text("\n".join(rep.lines) + "\n" + text + "\n")
        (rep.out_dir / "gpu_gateway_logs.txt").write_text(procs.tails(args.log_tail))
        rep.save()
    return rc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default="12345", help="which steps to run, e.g. 1234 or 5")
    p.add_argument("--model", default="/tmp/model-shape", help="model path for vllm serve and the engine")
    p.add_argument("--pod-cmd", default=DEFAULT_POD_CMD,
                   help="pod command; {python} {model} {port} {mem} {kv_bytes} are filled in "
                        f"(CPU test: {CPU_POD_CMD!r})")
    p.add_argument("--pod-url", default="", help="steps 2-3 against this running pod (e.g. http://127.0.0.1:8000) "
                   "instead of starting one; step 4 needs two pods of its own and is skipped")
    p.add_argument("--pod-port", type=int, default=0)
    p.add_argument("--pod-mem", type=float, default=0.4, help="--gpu-memory-utilization of each pod")
    p.add_argument("--pod-kv-bytes", type=int, default=8 << 30, help="KV cache bytes of each pod")
    p.add_argument("--pod-timeout", type=float, default=420, help="seconds a pod/engine may take to start")
    p.add_argument("--engine-mem", type=float, default=0.5, help="gpu_memory_utilization of the step-5 engine")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 32, 128], help="concurrency levels")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--waves", type=int, default=2, help="requests per cell = max(min_requests, waves*level)")
    p.add_argument("--min-requests", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--prompts", type=int, default=32, help="distinct prompts")
    p.add_argument("--prompt-words", type=int, default=40)
    p.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                   help="bare HTTP requests stop at EOS too (the gateway cannot ask for ignore_eos)")
    p.add_argument("--gateway-inflight", type=int, default=256, help="CONCLAVE_POD_MAX_INFLIGHT (and queue)")
    p.add_argument("--gateway-workers", type=int, default=1,
                   help="CONCLAVE_GATEWAY_WORKERS of the HTTP-pod gateways (steps 3-4; step 5's engine is one process)")
    p.add_argument("--context-length", type=int, default=32768)
    p.add_argument("--discussions", type=int, default=16)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--first-words", type=int, default=600, help="words of the problem statement (turn 1)")
    p.add_argument("--reply-words", type=int, default=120, help="words of each earlier reply in the prompt")
    p.add_argument("--turn-words", type=int, default=220, help="words of each new message")
    p.add_argument("--turn-tokens", type=int, default=64, help="max_tokens of each discussion turn")
    p.add_argument("--discussion-rounds", type=int, default=4)
    p.add_argument("--long-first-words", type=int, default=4000, help="a second, long-prefix variant; 0: none")
    p.add_argument("--long-reply-words", type=int, default=300)
    p.add_argument("--long-turn-words", type=int, default=1500)
    p.add_argument("--client-procs", type=int, default=8,
                   help="load-generator processes (throughput); 4 held the gateway's figures down in the eighth lease")
    p.add_argument("--client-channels", type=int, default=4,
                   help="gRPC connections per load-generator process (the kernel spreads connections, not "
                        "streams, over --gateway-workers)")
    p.add_argument("--budget-s", type=float, default=540, help="time limit of steps 1-4 and of step 5, each")
    p.add_argument("--state", default="/tmp/gpu_gateway_state.json", help="results accumulated over calls")
    p.add_argument("--out-dir", default=os.environ.get("OUT") or str(REPO / ".gpuw" / "out"))
    p.add_argument("--log-dir", default="/tmp/gpu_gateway_logs")
    p.add_argument("--log-tail", type=int, default=80)
    p.add_argument("--fake-engine", action="store_true", help="step 5 without vLLM (CPU test of this script)")
    p.add_argument("--gateway-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--client-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--client-kind", default="http", help=argparse.SUPPRESS)
    p.add_argument("--client-target", default="", help=argparse.SUPPRESS)
    p.add_argument("--client-model", default="", help=argparse.SUPPRESS)
    p.add_argument("--ready-file", default="", help=argparse.SUPPRESS)
    p.add_argument("--bare-first", action="store_true", help=argparse.SUPPRESS)
    return p


def main() -> int:
    args = build_parser().parse_args()
    if args.gateway_child:
        from services.inference.settings import InferenceSettings
        from services.runtime import event_loop

        # On the event loop the service runs on (lifecycle.main: CONCLAVE_EVENT_LOOP).
        event_loop.runner(event_loop.for_service("inference", InferenceSettings().event_loop))(gateway_child(args))
        return 0
    if args.client_child:
        asyncio.run(client_child(args))
        return 0
    return asyncio.run(orchestrate(args))


if __name__ == "__main__":
    sys.exit(main())
