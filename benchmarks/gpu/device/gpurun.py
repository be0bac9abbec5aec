"""The GPU machine's side of the scripted run: stash carried parts, install, convert, serve, evaluate, train.

Runs with the machine's own python3 (stdlib only, until the project's wheels are installed). Every call of
the lease runs one of two commands (plan.py writes them):

  gpurun.py --stage .gpuw stash              move this call's parts to /tmp/gpuw; assemble and install
                                             every artifact that is complete; start the GGUF conversion
  gpurun.py --stage .gpuw go --deadline-s S  advance the pipeline until S seconds have passed, then copy
                                             what it measured into $OUT

State lives in /tmp/gpuw (it lasts while the machine stays warm) and every step is resumable: an eval cut
off by the deadline resumes in the next call (same run id), so the same `go` call is simply repeated until
it prints "pipeline done". Servers (vLLM, the Conclave stack) start in their own process sessions, so they
outlive the call that started them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

W = Path(os.environ.get("GPURUN_DIR", "/tmp/gpuw"))
VLLM_SITE = Path(os.environ.get("GPURUN_VLLM_SITE", "/tmp/site"))
SITE2 = W / "site2"
STATE = W / "state.json"
LOGS = W / "logs"
RUNS = W / "runs"
# Base and tuned models are two pods, so the tuned one can start while the base one still serves.
PORTS = {"base": 8000, "tuned": int(os.environ.get("GPURUN_TUNED_PORT", "8001"))}
KV_BYTES = 16 << 30  # explicit, so two pods and the trainer can share the GPU (no memory profiling of others)
# The tuned pod streams 8 tokens per chunk (first token at once): what that saves the gateway is measured.
TUNED_STREAM_INTERVAL = int(os.environ.get("GPURUN_TUNED_STREAM_INTERVAL", "8"))
NATS_URL = "nats://127.0.0.1:4222"
SERVED = "qwen2.5-coder-0.5b-instruct"
K_CAP = int(os.environ.get("GPURUN_K_CAP", "2048"))
LIMIT = int(os.environ.get("GPURUN_LIMIT", "0"))  # a rehearsal on a CPU evaluates the first N only
MIN_STRICT_PROBLEMS = 20  # below this, train on the relaxed M500 selection (and say so)
# A rehearsal on a CPU: the pods are already running (llama.cpp), nothing is trained, "tuned" is the base pod.
REHEARSAL = os.environ.get("GPURUN_REHEARSAL") == "1"
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[gpurun {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------- state


def load_state() -> dict:
    return json.loads(STATE.read_text()) if STATE.exists() else {"steps": {}, "collected": []}


def save_state(st: dict) -> None:
    W.mkdir(parents=True, exist_ok=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(st, indent=1))
    tmp.replace(STATE)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def env_for(kind: str, proj: Path) -> dict[str, str]:
    """vllm: the bundle only; app: our wheels, the bundle (pydantic, otel), the project; train: app's too."""
    env = dict(os.environ, VLLM_USE_FLASHINFER_SAMPLER="0", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false")
    if kind == "vllm":
        env["PYTHONPATH"] = str(VLLM_SITE)
    else:
        env["PYTHONPATH"] = ":".join([str(SITE2), str(VLLM_SITE), str(proj), str(proj / "proto")])
        env["PATH"] = f"{SITE2 / 'bin'}:{env.get('PATH', '')}"
    return env


def spawn(name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> int:
    """A server in its own session (it outlives this call); its output goes to LOGS/NAME.log."""
    LOGS.mkdir(parents=True, exist_ok=True)
    out = (LOGS / f"{name}.log").open("ab")
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    log(f"started {name} (pid {proc.pid}): {' '.join(argv)[:300]}")
    return proc.pid


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with contextlib.suppress(OSError):  # a zombie is not alive
        return (Path(f"/proc/{pid}/stat").read_text().split()[2]) != "Z"
    return True


def stop(pid: int | None, wait_s: float = 60) -> None:
    if not alive(pid):
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGTERM)
    end = time.monotonic() + wait_s
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.5)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def http_ok(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def pod_metrics(port: int) -> dict[str, float]:
    """vLLM's own /metrics, every series of a name summed (one engine, so the labels are the model's)."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("vllm:"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            with contextlib.suppress(ValueError):
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def load_between(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """What the pod did between two /metrics snapshots: tokens, request sizes, prefix-cache hits."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(after) | set(before)}
    reqs = d.get("vllm:request_generation_tokens_count", 0.0)
    queries = d.get("vllm:prefix_cache_queries_total", 0.0)
    return {
        "seconds": round(seconds, 1),
        "generated_tokens": d.get("vllm:generation_tokens_total", 0.0),
        "prompt_tokens": d.get("vllm:prompt_tokens_total", 0.0),
        "requests": reqs,
        "generated_tok_per_s": round(d.get("vllm:generation_tokens_total", 0.0) / max(seconds, 1e-9), 1),
        "mean_prompt_tokens": round(d.get("vllm:request_prompt_tokens_sum", 0.0) / reqs, 1) if reqs else 0.0,
        "mean_generated_tokens": round(d.get("vllm:request_generation_tokens_sum", 0.0) / reqs, 1) if reqs else 0.0,
        "prefix_cache_hit_rate": round(d.get("vllm:prefix_cache_hits_total", 0.0) / queries, 3) if queries else 0.0,
        "preemptions": d.get("vllm:num_preemptions_total", 0.0),
    }


class Sampler(threading.Thread):
    """Calls `sample()` every `every` seconds while a step runs, until `stop()`."""

    def __init__(self, every: float) -> None:
        super().__init__(daemon=True)
        self.every, self.halt = every, threading.Event()

    def sample(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while not self.halt.wait(self.every):
            self.sample()

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


class PodSampler(Sampler):
    """The pod's running and waiting requests, every 2 s."""

    def __init__(self, port: int, every: float = 2.0) -> None:
        super().__init__(every)
        self.port, self.samples = port, []

    def sample(self) -> None:
        m = pod_metrics(self.port)
        if m:
            self.samples.append((m.get("vllm:num_requests_running", 0.0), m.get("vllm:num_requests_waiting", 0.0)))

    def finish(self) -> dict[str, float]:
        self.stop()
        busy = [r for r, _ in self.samples if r > 0]
        return {"mean_running": round(sum(r for r, _ in self.samples) / max(len(self.samples), 1), 1),
                "mean_running_while_busy": round(sum(busy) / max(len(busy), 1), 1),
                "max_running": max((r for r, _ in self.samples), default=0.0),
                "mean_waiting": round(sum(w for _, w in self.samples) / max(len(self.samples), 1), 1),
                "samples": len(self.samples)}


def cpu_ticks() -> dict[int, tuple[str, int]]:
    """Every process's CPU time so far (user + system, in clock ticks), under a short label."""
    out = {}
    for d in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            args = (d / "cmdline").read_bytes().split(b"\0")
            words = [a.decode(errors="replace") for a in args if a]
            label = comm
            if "-m" in words and words.index("-m") + 1 < len(words):
                rest = words[words.index("-m") + 1:]
                label = " ".join(rest[:3] if rest[0] == "services.cli.main" else rest[:2])
            elif len(words) > 1 and words[1].endswith(".py"):
                label = Path(words[1]).name
            out[int(d.name)] = (label[:60], int(fields[11]) + int(fields[12]))
    return out


class CpuSampler(Sampler):
    """Every process's CPU time, last seen every `every` seconds: a process that ends inside the step (the
    benchmark's gateway and clients) still counts with what it had used by its last sample."""

    def __init__(self, every: float = 1.0) -> None:
        super().__init__(every)
        self.seen = cpu_ticks()

    def sample(self) -> None:
        self.seen.update(cpu_ticks())

    def finish(self) -> dict[int, tuple[str, int]]:
        self.stop()
        self.sample()
        return self.seen


def cores_between(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]], seconds: float) -> dict[str, float]:
    """CPU cores each kind of process used between two snapshots (processes grouped by label)."""
    hz = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for pid, (label, ticks) in after.items():
        used[label] = used.get(label, 0.0) + (ticks - before.get(pid, (label, 0))[1]) / hz / max(seconds, 1e-9)
    return {k: round(v, 2) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v >= 0.05}


# ----------------------------------------------------------------------------------------------- stash


def stash(stage: Path) -> dict:
    """Move carried parts to W/parts; assemble, verify and install each complete artifact."""
    manifest = json.loads((stage / "manifest.json").read_text())
    # The next call replaces the carried STAGE/proj: a server running from there would lose its cwd.
    if (stage / "proj").is_dir():
        shutil.copytree(stage / "proj", W / "proj", dirs_exist_ok=True)
    st = load_state()
    for name, art in manifest["artifacts"].items():
        dest = W / "parts" / name
        dest.mkdir(parents=True, exist_ok=True)
        for part in art["parts"]:
            src = stage / part["path"]
            if src.is_file() and src.stat().st_size == part["bytes"]:
                shutil.move(str(src), dest / Path(part["path"]).name)
        have = sum((dest / Path(p["path"]).name).is_file() for p in art["parts"])
        log(f"{name}: {have} of {len(art['parts'])} parts on the machine")
        if have == len(art["parts"]) and not st["steps"].get(f"install-{name}", {}).get("done"):
            started = time.monotonic()
            install(name, art, dest, manifest)
            st["steps"][f"install-{name}"] = {"done": True, "seconds": round(time.monotonic() - started, 1)}
            save_state(st)
    if all(st["steps"].get(f"install-{n}", {}).get("done") for n in ("wheels", "model")):
        start_conversion(stage, st)
    return st


def install(name: str, art: dict, parts_dir: Path, manifest: dict) -> None:
    whole = W / "art" / name
    whole.parent.mkdir(parents=True, exist_ok=True)
    with whole.open("wb") as out:
        for part in art["parts"]:
            with (parts_dir / Path(part["path"]).name).open("rb") as f:
                shutil.copyfileobj(f, out)
    got = sha256_of(whole)
    if got != art["sha256"]:
        raise SystemExit(f"{name}: sha256 {got} does not match the manifest's {art['sha256']}")
    shutil.rmtree(parts_dir)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade"]
    if name == "model":
        whole.rename(W / manifest["model"]["gguf"])
    elif name in ("wheels", "vllm"):
        unpacked = W / f"{name}-whl"
        unpacked.mkdir(exist_ok=True)
        with tarfile.open(whole) as tar:
            tar.extractall(unpacked, filter="data")
        whole.unlink()
        target = SITE2 if name == "wheels" else VLLM_SITE
        subprocess.run([*pip, "--target", str(target), *map(str, sorted(unpacked.glob("*.whl")))], check=True)
        shutil.rmtree(unpacked)
    log(f"{name}: assembled, sha256 verified, installed")


def start_conversion(stage: Path, st: dict) -> None:
    if alive(st["steps"].get("convert", {}).get("pid")) or (W / "base" / "conversion.json").exists():
        return
    manifest = json.loads((stage / "manifest.json").read_text())
    proj = W / "proj"
    pid = spawn("convert", [sys.executable, "-m", "trainer.gguf_to_hf", str(W / manifest["model"]["gguf"]),
                            str(W / "base")], env_for("app", proj), cwd=proj)
    st["steps"]["convert"] = {"pid": pid, "started": time.time()}
    save_state(st)


# ----------------------------------------------------------------------------------------------- pipeline


class Deadline(Exception):
    pass


@dataclass(frozen=True)
class Eval:
    """One `conclave eval` run of the pipeline; its name is its output folder and its step."""

    name: str
    which: str  # "base" or "tuned": the pod (and so the model) it runs against
    benchmark: str
    mode: str
    concurrency: int
    split: str | None = None
    extra: tuple[str, ...] = ()


def numbered(name: str, n: int) -> tuple[str, ...]:
    """name, name2, name3, ...: repeated runs of one eval."""
    return tuple(f"{name}{i if i > 1 else ''}" for i in range(1, n + 1))


# Team runs of the training half: each adds trajectories, and M500 keeps only the correct ones (v2: 2 runs
# kept 32 problems, too few to move the tuned team beyond chance).
TRAIN_RUNS = numbered("base-mas-train", int(os.environ.get("GPURUN_TRAIN_RUNS", "4")))
# Each held-out team arm (base, tuned) runs this often; `conclave compare --more-a/--more-b` pools them, so
# the model's sampling noise (±3 problems between runs in v1 and v2) is averaged per problem.
HELDOUT_RUNS = int(os.environ.get("GPURUN_HELDOUT_RUNS", "2"))
# 0: all three epochs. A short lease caps it (the fourth lease: 60 steps of 16 samples, 0.75 epoch, 193 s on an H100).
SFT_MAX_STEPS = int(os.environ.get("GPURUN_SFT_MAX_STEPS", "0"))
# The M500 selections of earlier leases: the same base model and revision, the same training half only.
EARLIER_M500 = ("docs/gpu-runs/2026-12-07-qwen0.5b-math500-loop/runs/train",
                "docs/gpu-runs/2026-12-07b-qwen0.5b-loop-v2/train",
                "docs/gpu-runs/2026-12-07c-qwen0.5b-loop-v3/train")
# Runs of an earlier lease, resumed rather than redone when they were made with this lease's model and revision
# (v2's verified run is whole; the seventh lease's lean grounded team and the single agent beside it are whole.
# The votes matched to them are not resumed: 12% and 25% of their samples were lost to look-ups that timed
# out (docs/results.md, "The eighth lease"), so a next lease votes afresh.)
EARLIER_RUNS = {"base-verified-all": "docs/gpu-runs/2026-12-07b-qwen0.5b-loop-v2/base-verified-all",
                "base-grounded-all": "docs/gpu-runs/2026-12-07e-qwen0.5b-lease7/base-grounded-all",
                "base-single-all": "docs/gpu-runs/2026-12-07e-qwen0.5b-lease7/base-single-all"}
# The team's concurrency in problems (each run) and in calls (the CEO's slots, the gateway's in-flight calls):
# v2 kept the pod at 0.66 of its synthetic throughput with 256 problems and 256 calls in flight.
TEAM_CONCURRENCY = int(os.environ.get("GPURUN_TEAM_CONCURRENCY", "96"))
STACK_CONCURRENCY = os.environ.get("GPURUN_STACK_CONCURRENCY", "512")
# The ablations of issue 15 on all 500 problems (profiles in services/protocol/profiles/)
ABLATIONS = ("math500-ablate-direction", "math500-ablate-persona", "math500-ablate-norevision")
# Issue 15's goal on all 500: a team grounded in execution against the vote matched to its tokens (step
# grounded-vote; the fifth lease measured math500-grounded's tokens-to-programs variant).
GROUNDED_PROFILE = os.environ.get("GPURUN_GROUNDED_PROFILE", "math500-lean-grounded")
GROUNDED_CONCURRENCY = int(os.environ.get("GPURUN_GROUNDED_CONCURRENCY", "128"))
GATEWAY_LEVELS = os.environ.get("GPURUN_GATEWAY_LEVELS", "1 32 128").split()
# Seconds each gateway measurement may take: beside the loop, so it must not eat a lease's device time.
GATEWAY_BUDGET_S = int(os.environ.get("GPURUN_GATEWAY_BUDGET_S", "150"))
# Requests per cell: v2's cells (2 waves) were 1-3 s of load, too short to read a 2% difference.
GATEWAY_WAVES = os.environ.get("GPURUN_GATEWAY_WAVES", "12")
# Load-generator processes: in the eighth lease 4 held the gateway's figures down (one gateway process, 4 against
# 8 processes: 0.841 against 0.979 of bare vLLM at 32 streams, 0.842 against 0.922 at 128).
GATEWAY_CLIENT_PROCS = int(os.environ.get("GPURUN_GATEWAY_CLIENT_PROCS", "8"))


class Pipeline:
    def __init__(self, stage: Path, deadline_s: float) -> None:
        self.stage = stage
        self.proj = W / "proj"
        self.manifest = json.loads((stage / "manifest.json").read_text())
        self.deadline = T0 + deadline_s
        self.st = load_state()
        self.lock = threading.RLock()  # a group's evals record from their own threads

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def record(self, step: str, **info) -> None:
        with self.lock:
            self.st["steps"].setdefault(step, {}).update(info)
            save_state(self.st)

    def done(self, step: str) -> bool:
        return bool(self.st["steps"].get(step, {}).get("done"))

    def wait_for(self, what: str, check, poll: float = 1.0) -> None:
        while not check():
            if self.left() < 5:
                raise Deadline(f"still waiting for {what}")
            time.sleep(poll)

    # steps ------------------------------------------------------------------------------------------

    def convert(self) -> None:
        info = W / "base" / "conversion.json"
        pid = self.st["steps"].get("convert", {}).get("pid")
        self.wait_for("the GGUF conversion", lambda: info.exists() or not alive(pid))
        if not info.exists():
            raise SystemExit(f"conversion failed; see {LOGS / 'convert.log'}:\n{tail(LOGS / 'convert.log')}")
        self.record("convert", done=True, **json.loads(info.read_text()))

    def start_pod(self, which: str) -> None:
        """vLLM on W/base or W/tuned, on its own port, under one served name so the stack needs no change."""
        key = f"serve-{which}"
        if alive(self.st["steps"].get(key, {}).get("pid")) or self.done(key):
            return
        argv = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(W / which),
                "--served-model-name", SERVED, "--port", str(PORTS[which]), "--gpu-memory-utilization", "0.3",
                "--kv-cache-memory-bytes", str(KV_BYTES), "--max-model-len", "32768", "--max-num-seqs", "512",
                "--enable-prefix-caching", "--generation-config", "vllm", "--disable-uvicorn-access-log"]
        if which == "tuned" and TUNED_STREAM_INTERVAL > 1:
            argv += ["--stream-interval", str(TUNED_STREAM_INTERVAL)]
        env = env_for("vllm", self.proj) | {"VLLM_CACHE_ROOT": str(W / "vllm-cache")}
        self.record(key, pid=spawn(f"vllm-{which}", argv, env), started=time.time())

    def serve(self, which: str) -> None:
        key = f"serve-{which}"
        if not self.st["steps"].get(key, {}).get("pid") and not REHEARSAL:
            self.start_pod(which)
        self.wait_for(f"vLLM ({which}) to be healthy",
                      lambda: http_ok(f"http://127.0.0.1:{PORTS[which]}/health") or self.tick(), 2)
        if not self.st["steps"][key].get("healthy_after_s") and self.st["steps"][key].get("started"):
            self.record(key, healthy_after_s=round(time.time() - self.st["steps"][key]["started"], 1))
        self.record(key, done=True)

    def stack(self, which: str) -> None:
        """`conclave up` against one pod; the tuned stack replaces the base one (fresh state, fresh archive)."""
        key = f"stack-{which}"
        pid = self.st["steps"].get(key, {}).get("pid")
        if not alive(pid):
            for other in ("stack-base", "stack-tuned"):
                stop(self.st["steps"].get(other, {}).get("pid"))
            env = env_for("app", self.proj) | {
                "CONCLAVE_POD_MAX_INFLIGHT": STACK_CONCURRENCY, "CONCLAVE_POD_QUEUE_LIMIT": "8192",
                "CONCLAVE_CONTEXT_LENGTH": "32768", "CONCLAVE_CONCURRENCY": STACK_CONCURRENCY}
            # Its log is appended to: only what this start writes says whether this start is up.
            logf = LOGS / f"{key}.log"
            self.record(key, log_from=logf.stat().st_size if logf.exists() else 0)
            pid = spawn(key, [sys.executable, "-m", "services.cli.main", "up", "--pods",
                              f"http://127.0.0.1:{PORTS[which]}", "--state-dir", str(W / key),
                              "--nats-url", NATS_URL, "--k-cap", str(K_CAP)], env, cwd=self.proj)
            self.record(key, pid=pid, started=time.time())
        logf, start = LOGS / f"{key}.log", self.st["steps"][key].get("log_from", 0)

        def said() -> str:
            return logf.read_bytes()[start:].decode(errors="replace") if logf.exists() else ""

        # `up` says "stack running" once the pod answers and the services registered, or after 300 s
        # without (a warning, recorded): the evals then show what is missing.
        self.wait_for("the Conclave stack", lambda: "stack running" in said(), 1)
        self.record(key, done=True, all_registered="services are up" in said())

    def revision(self, which: str) -> tuple[str, str]:
        if which == "base":
            return SERVED, self.manifest["model"]["sha256"][:12]
        weights = sorted((W / "tuned").glob("*.safetensors"))
        if not weights:  # a rehearsal serves the base model under the tuned name
            return f"{SERVED}+sft-m500", "rehearsal"
        return f"{SERVED}+sft-m500", hashlib.sha256(b"".join(sha256_of(p).encode() for p in weights)).hexdigest()[:12]

    def eval(self, ev: Eval) -> None:
        """One `conclave eval`, resumable (same --out); cut at the deadline, it goes on in the next call."""
        if self.done(ev.name):
            return
        model, rev = self.revision(ev.which)
        out = RUNS / ev.name
        argv = [sys.executable, "-m", "services.cli.main", "eval", "--benchmark", ev.benchmark, "--mode", ev.mode,
                "--concurrency", str(ev.concurrency), "--timeout", "1800", "--out", str(out), "--model", model,
                "--revision", rev, "--nats-url", NATS_URL, "--data-dir", str(self.proj / "benchmarks" / "data"),
                *(["--split", ev.split] if ev.split else []), *ev.extra, *(["--limit", str(LIMIT)] if LIMIT else [])]
        started, cut = time.monotonic(), False
        logf = (LOGS / f"eval-{ev.name}.log").open("ab")
        # The stack is secure by default: the client's NATS user and the CA are in its state dir.
        env = env_for("app", self.proj) | {"CONCLAVE_STATE_DIR": str(W / f"stack-{ev.which}")}
        proc = subprocess.Popen(argv, env=env, cwd=self.proj, stdout=logf, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=max(1.0, self.left() - 8))
        except subprocess.TimeoutExpired:
            cut = True
            proc.send_signal(signal.SIGINT)  # graded problems are on disk; the next call resumes this run
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            proc.kill()
        secs = time.monotonic() - started
        prev = self.st["steps"].get(ev.name, {})
        results = out / "results.jsonl"
        graded = len(results.read_text().splitlines()) if results.exists() else 0
        self.record(ev.name, seconds=round(prev.get("seconds", 0) + secs, 1), graded=graded, argv=argv[3:])
        if cut:
            raise Deadline(f"eval {ev.name} cut at the deadline with {graded} graded; resumes next call")
        if proc.returncode != 0:  # failed on its own: recorded, and the rest of the lease goes on
            self.record(ev.name, done=True, error=f"rc {proc.returncode}: {tail(LOGS / f'eval-{ev.name}.log', 1500)}")
            return
        report = out / "report.json"
        self.record(ev.name, done=True, problems_per_hour=round(graded / max(self.st["steps"][ev.name]["seconds"], 1e-9) * 3600),
                    **({"report": report.name} if report.exists() else {}))

    def group(self, name: str, which: str, chains: list[list[Eval]]) -> None:
        """Runs the chains side by side (each chain's evals one after another) against one pod, and records
        what the pod did meanwhile: tokens/s, request sizes, how many requests it held."""
        sampler, before, started = PodSampler(PORTS[which]), pod_metrics(PORTS[which]), time.monotonic()
        cpu0, cpu = cpu_ticks(), CpuSampler(every=5.0)  # is a Conclave process (one CEO) the limit, or the pod?
        sampler.start()
        cpu.start()
        failures: list[str] = []

        def run_chain(chain: list[Eval]) -> None:
            for ev in chain:
                try:
                    self.eval(ev)
                except Deadline as exc:
                    failures.append(str(exc))
                    return

        threads = [threading.Thread(target=run_chain, args=(c,), daemon=True) for c in chains]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            self.tick()
            time.sleep(1)
        secs = time.monotonic() - started
        prev = self.st["steps"].get(name, {})
        self.record(name, **{f"load_{len(prev.get('calls', []))}": load_between(before, pod_metrics(PORTS[which]), secs)
                             | sampler.finish() | {"cores": cores_between(cpu0, cpu.finish(), secs)}},
                    calls=[*prev.get("calls", []), round(secs, 1)])
        if failures:
            raise Deadline("; ".join(failures)[:3000])
        self.record(name, done=True)

    def synthetic(self, group: str, which: str) -> None:
        """The same pod on a synthetic batch of the group's request sizes at its concurrency (`vllm bench
        serve`): what the pod can sustain, against what the team kept it doing."""
        load = self.st["steps"][group]["load_0"]
        conc = max(1, round(load["mean_running_while_busy"]))
        out = W / "synthetic"
        out.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve", "--backend", "vllm",
                "--base-url", f"http://127.0.0.1:{PORTS[which]}", "--model", SERVED, "--tokenizer", str(W / which),
                "--dataset-name", "random", "--random-input-len", str(max(1, round(load["mean_prompt_tokens"]))),
                "--random-output-len", str(max(1, round(load["mean_generated_tokens"]))), "--ignore-eos",
                "--max-concurrency", str(conc), "--num-prompts", str(max(4 * conc, 200)), "--disable-tqdm",
                "--save-result", "--result-dir", str(out), "--result-filename", f"{group}.json"]
        with (LOGS / "synthetic.log").open("ab") as logf:
            r = subprocess.run(argv, env=env_for("vllm", self.proj), stdout=logf, stderr=subprocess.STDOUT,
                               timeout=max(30.0, self.left() - 5))
        if r.returncode != 0:
            raise SystemExit(f"vllm bench serve failed:\n{tail(LOGS / 'synthetic.log', 1500)}")
        res = json.loads((out / f"{group}.json").read_text())
        synth = res.get("output_throughput", 0.0)
        self.record(f"synthetic-{group}", done=True, concurrency=conc, synthetic_output_tok_per_s=round(synth, 1),
                    team_generated_tok_per_s=load["generated_tok_per_s"],
                    ratio=round(load["generated_tok_per_s"] / synth, 3) if synth else None,
                    bench={k: res.get(k) for k in ("completed", "total_input_tokens", "total_output_tokens",
                                                   "duration", "mean_ttft_ms", "p99_ttft_ms")})

    def dataset(self) -> None:
        """The M500 selection over the team's training-half trajectories only (never the held-out half)."""
        archive, picked = W / "stack-base" / "archive", W / "train-archive"
        picked.mkdir(exist_ok=True)
        grades, copied = [], 0
        for run in TRAIN_RUNS:
            results = RUNS / run / "results.jsonl"
            grades += ["--grades", str(results)]
            for line in results.read_text().splitlines():
                src = archive / f"{json.loads(line)['problem_id']}.json" if line.strip() else None
                if src is not None and src.exists():
                    shutil.copy2(src, picked / src.name)
                    copied += 1
        env = env_for("app", self.proj)
        summaries = {}
        for label, extra in (("strict", []), ("relaxed", ["--allow", "format_broken", "--allow", "no_consensus"])):
            if not TRAIN_RUNS:  # no new trajectories: the earlier leases' selections are the whole of it
                (W / f"m500-{label}.jsonl").write_text("")
                summaries[label] = "no training-half runs in this lease (GPURUN_TRAIN_RUNS=0)"
                continue
            r = subprocess.run([sys.executable, "-m", "trainer.dataset", "--archive", str(picked), *grades,
                                "--out", str(W / f"m500-{label}.jsonl"), *extra], env=env,
                               cwd=self.proj, capture_output=True, text=True)
            summaries[label] = (r.stdout + r.stderr)[-1500:]
            if r.returncode != 0:
                raise SystemExit(f"trainer.dataset ({label}) failed:\n{summaries[label]}")
        # Earlier leases' selections join this one's, label for label (the same model, the training half).
        earlier = {label: [self.proj / d / f"m500-{label}.jsonl" for d in EARLIER_M500
                           if (self.proj / d / f"m500-{label}.jsonl").exists()] for label in summaries}
        def lines(f: Path) -> list[str]:
            return [x for x in f.read_text().splitlines() if x]

        def problems(rows: list[str]) -> int:
            return len({json.loads(x)["problem_id"] for x in rows})

        trajectories = {}
        for label in summaries:
            this = lines(W / f"m500-{label}.jsonl")
            rows = this + [x for f in earlier[label] for x in lines(f)]
            (W / f"m500-{label}-all.jsonl").write_text("".join(x + "\n" for x in rows))
            trajectories[label] = {"this_lease": problems(this), "with_earlier": problems(rows), "samples": len(rows)}
        chosen = "strict" if trajectories["strict"]["with_earlier"] >= MIN_STRICT_PROBLEMS else "relaxed"
        self.record("dataset", done=True, trajectories=copied, summaries=summaries, problems=trajectories,
                    earlier=[str(f.relative_to(self.proj)) for f in earlier[chosen]], chosen=chosen)

    def sft_start(self) -> None:
        """Full fine-tuning in the background, beside the base pod (both fit the GPU; the pod has fixed KV)."""
        if alive(self.st["steps"].get("sft", {}).get("pid")) or REHEARSAL:
            self.record("sft-start", done=True)
            return
        # Beside a busy pod on an 80 GB card, micro batches of 4 × 8 192 tokens ran out of memory at step 38
        # (float32 master weights, logits of 152 k vocabulary in float32): 2 there, 4 on a 141 GB card.
        self.spawn_sft(4 if gpu_total_gib() >= 100 else 2, attempt=1)
        self.record("sft-start", done=True)

    def spawn_sft(self, micro: int, attempt: int) -> None:
        chosen = self.st["steps"]["dataset"]["chosen"]
        if (W / "sft").exists():
            shutil.rmtree(W / "sft")  # a crashed attempt's metrics would be appended to
        argv = [sys.executable, "-m", "trainer.sft", "--data", str(W / f"m500-{chosen}-all.jsonl"),
                "--base-model", str(W / "base"), "--output", str(W / "sft"), "--epochs", "3", "--seq-len", "8192",
                "--global-batch", "16", "--micro-batch", str(micro), "--lr", "1e-5", "--max-steps", str(SFT_MAX_STEPS)]
        env = env_for("app", self.proj) | {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
        self.record("sft", pid=spawn("sft", argv, env, cwd=self.proj), started=time.time(), argv=argv[2:],
                    micro_batch=micro, attempt=attempt)

    def tick(self) -> bool:
        """Background work, advanced from every wait: when training ends, the tuned pod starts at once."""
        sft = self.st["steps"].get("sft", {})
        if REHEARSAL or sft.get("done") or not sft.get("pid") or alive(sft["pid"]):
            return False
        summary = W / "sft" / "summary.json"
        if not summary.exists():
            crash = f"trainer.sft ended without a summary:\n{tail(LOGS / 'sft.log')}"
            if sft.get("attempt", 1) == 1 and sft.get("micro_batch", 1) > 1:
                # Most likely out of memory beside the pod: once more from the start, half the micro batch
                # (the same global batch, so the same schedule and result).
                log(f"trainer.sft crashed; restarting with micro batch {sft['micro_batch'] // 2}")
                self.record("sft", first_attempt_error=crash[-1500:])
                self.spawn_sft(sft["micro_batch"] // 2, attempt=2)
                return False
            self.record("sft", error=crash)
            return False
        trained = json.loads(summary.read_text())
        if not math.isfinite(trained.get("last_loss") or 0.0):  # never serve a diverged model as "tuned"
            self.record("sft", error=f"trainer.sft ended with loss {trained.get('last_loss')}: not served")
            return False
        if (W / "tuned").exists():
            shutil.rmtree(W / "tuned")
        shutil.copytree(W / "sft" / "final", W / "tuned")
        self.record("sft", done=True, seconds=round(time.time() - sft["started"], 1),
                    summary=json.loads(summary.read_text()))
        if gpu_total_gib() < 100:  # an 80 GB card: the tuned pod waits until the base pod is gone
            return False
        self.start_pod("tuned")
        return False

    def sft_wait(self) -> None:
        if REHEARSAL:
            self.record("sft", done=True, rehearsal=True)
        self.wait_for("trainer.sft", lambda: self.tick() or self.done("sft") or "error" in self.st["steps"]["sft"], 2)
        if not self.done("sft"):
            raise SystemExit(self.st["steps"]["sft"]["error"])

    def retire_base(self) -> None:
        """Base work is over: its stack and pod go, and the tuned pod starts if it has not yet."""
        stop(self.st["steps"].get("stack-base", {}).get("pid"))
        if not REHEARSAL:
            stop(self.st["steps"].get("serve-base", {}).get("pid"))
            self.start_pod("tuned")
        self.record("retire-base", done=True)

    def gateway(self, which: str, workers: int = 1) -> None:
        """benchmarks/gpu_gateway.py steps 2-3 on a running pod: bare vLLM against the gateway in front of it
        (`workers` gateway processes on one port), GATEWAY_CLIENT_PROCS load generators, concurrency 1/32/128,
        every process's CPU over the step recorded (and each side's per cell, by gpu_gateway.py)."""
        step = f"gateway-{which}" + (f"-w{workers}" if workers > 1 else "")
        out = W / step
        cpu0, started, sampler = cpu_ticks(), time.monotonic(), CpuSampler()
        sampler.start()
        argv = [sys.executable, "benchmarks/gpu_gateway.py", "--steps", "23", "--pod-url",
                f"http://127.0.0.1:{PORTS[which]}", "--levels", *GATEWAY_LEVELS, "--rounds", "2",
                "--waves", GATEWAY_WAVES, "--min-requests", str(4 * int(GATEWAY_WAVES)),
                "--no-ignore-eos", "--client-procs", str(GATEWAY_CLIENT_PROCS), "--gateway-inflight", "256",
                "--budget-s", str(max(30, min(GATEWAY_BUDGET_S, int(self.left() - 20)))), "--out-dir", str(out), "--log-dir", str(LOGS),
                "--gateway-workers", str(workers),
                *os.environ.get("GPURUN_GATEWAY_ARGS", "").split()]  # a rehearsal's smaller load
        with (LOGS / f"{step}.log").open("ab") as logf:
            r = subprocess.run(argv, env=env_for("app", self.proj) | {"OUT": str(out)}, cwd=self.proj, stdout=logf,
                               stderr=subprocess.STDOUT, timeout=max(30.0, self.left() - 5))
        cores = cores_between(cpu0, sampler.finish(), time.monotonic() - started)
        if not (out / "gpu_gateway.json").exists():
            raise SystemExit(f"gpu_gateway.py failed:\n{tail(LOGS / f'{step}.log', 1500)}")
        res = json.loads((out / "gpu_gateway.json").read_text())
        # Cut by its budget, it keeps the levels it finished: recorded with the reason.
        self.record(step, done=True, stream_interval=TUNED_STREAM_INTERVAL if which == "tuned" else 1,
                    workers=workers, throughput=res.get("throughput", {}).get("results"), cores=cores,
                    **({"error": tail(LOGS / f"{step}.log", 800)} if r.returncode else {}))

    def seed(self) -> None:
        """Earlier leases' runs of the same model and revision into RUNS: their evals resume where they stopped."""
        revision, seeded = self.revision("base")[1], {}
        for name, rel in EARLIER_RUNS.items():
            src, dest = self.proj / rel, RUNS / name
            if dest.exists() or not (src / "run.json").exists():
                continue
            if json.loads((src / "run.json").read_text()).get("revision") != revision:
                seeded[name] = "made with another model revision: not resumed"
                continue
            shutil.copytree(src, dest)
            seeded[name] = f"{len((dest / 'results.jsonl').read_text().splitlines())} graded, resumed from {rel}"
        self.record("seed", done=True, runs=seeded)

    def audit(self) -> None:
        """`conclave audit` of every base team run against the single agent on all 500: where right answers
        were lost (issue 15's first question), written beside each run's results."""
        single = RUNS / "base-single-all"
        env = env_for("app", self.proj)
        audited = {}
        for run in sorted(RUNS.glob("base-*")):
            if not (run / "results.jsonl").exists() or "single" in run.name or "vote" in run.name:
                continue
            r = subprocess.run([sys.executable, "-m", "services.cli.main", "audit", str(run), "--archive",
                                str(W / "stack-base" / "archive"), "--single", str(single)],
                               env=env, cwd=self.proj, capture_output=True, text=True, timeout=max(30.0, self.left() - 5))
            audited[run.name] = r.returncode if r.returncode else "ok"
        self.record("audit", done=True, runs=audited)

    @staticmethod
    def groups() -> dict[str, list[list[Eval]]]:
        """Every eval of the pipeline, by the group step that runs it: chains side by side, each one's evals
        one after another."""
        def team(name: str, which: str, split: str | None = None, profile: str | None = None) -> Eval:
            return Eval(name, which, "math500", "mas", TEAM_CONCURRENCY, split, ("--profile", profile) if profile else ())

        verified = team("base-verified-all", "base", profile="math500-verified")
        vote = Eval("base-vote-all", "base", "math500", "vote", 64,
                    extra=("--k", "auto", "--match", str(RUNS / "base-verified-all"), "--k-max", "32"))
        grounded = Eval("base-grounded-all", "base", "math500", "mas", GROUNDED_CONCURRENCY,
                        extra=("--profile", GROUNDED_PROFILE))
        grounded_vote = Eval("base-gvote-all", "base", "math500", "vote", 64,
                             extra=("--k", "auto", "--match", str(RUNS / grounded.name), "--k-max", "32"))
        single = Eval("base-single-all", "base", "math500", "single", 128)
        others = [Eval(f"base-{b}-{m}", "base", b, m, 64) for b in ("aime2024", "humaneval", "mbpp")
                  for m in ("single", "mas")]
        return {
            "base-team": [[team(n, "base", "heldout")] for n in numbered("base-mas-heldout", HELDOUT_RUNS)]
            + [[team(n, "base", "train")] for n in TRAIN_RUNS],
            "base-rest": [[single]],
            # issue 15 on MATH-500: the ablations, the verified team and the vote matched to it (soft: a short
            # lease may skip them; v2's runs of the last two stand)
            "ablations": [[team(f"base-{p.removeprefix('math500-')}-all", "base", profile=p)] for p in ABLATIONS],
            "base-vote": [[verified, vote]],
            # the grounded team, then the vote matched to its tokens problem by problem; the single agent beside
            "grounded-vote": [[grounded, grounded_vote], [single]],
            "base-others": [others[:2], others[2:4], others[4:]],
            "tuned-heldout": [[Eval("tuned-single-heldout", "tuned", "math500", "single", 128, "heldout")],
                              *[[team(n, "tuned", "heldout")] for n in numbered("tuned-mas-heldout", HELDOUT_RUNS)]],
        }

    def steps(self):
        groups = self.groups()

        def group(name: str, which: str):
            return lambda: self.group(name, which, groups[name])

        # With no training-half runs (GPURUN_TRAIN_RUNS=0: the earlier leases' M500 is the data), SFT needs
        # nothing of this lease: it starts first, and the base team's held-out runs use the pod while it trains.
        train = [("dataset", self.dataset, False), ("sft-start", self.sft_start, False)]
        before, after = (train, []) if not TRAIN_RUNS else ([], train)
        # soft: a failure is recorded and the pipeline goes on (measurements beside the loop, not the loop)
        steps = [
            ("convert", self.convert, False),
            ("serve-base", lambda: self.serve("base"), False),
            ("stack-base", lambda: self.stack("base"), False),
            ("seed", self.seed, True),
            *before,
            ("base-team", group("base-team", "base"), False),
            ("synthetic-base-team", lambda: self.synthetic("base-team", "base"), True),
            *after,
            ("base-rest", group("base-rest", "base"), False),
            ("ablations", group("ablations", "base"), True),
            ("audit", self.audit, True),
            ("base-vote", group("base-vote", "base"), True),
            ("grounded-vote", group("grounded-vote", "base"), True),
            ("base-others", group("base-others", "base"), True),
            ("gateway-base", lambda: self.gateway("base"), True),
            ("gateway-base-w2", lambda: self.gateway("base", workers=2), True),
            ("sft-wait", self.sft_wait, False),
            ("retire-base", self.retire_base, False),
            ("serve-tuned", lambda: self.serve("tuned"), False),
            ("stack-tuned", lambda: self.stack("tuned"), False),
            ("tuned-heldout", group("tuned-heldout", "tuned"), False),
            ("gateway-tuned", lambda: self.gateway("tuned"), True),
        ]
        return steps

    def go(self, only: list[str], skip: list[str]) -> bool:
        for name, fn, soft in self.steps():
            if self.done(name) or (only and name not in only):
                continue
            if name in skip:
                if not soft:
                    raise SystemExit(f"--skip {name}: only a measurement beside the loop may be skipped")
                log(f"step {name} skipped (--skip)")
                self.record(name, done=True, skipped=True)
                continue
            log(f"step {name}")
            started = time.monotonic()
            try:
                fn()
            except Deadline as exc:
                log(f"deadline: {exc}")
                return False
            except (SystemExit, Exception) as exc:  # noqa: BLE001 - recorded, collected, shown
                log(f"step {name} FAILED: {exc!r}"[:3000])
                self.record(name, error=repr(exc)[-3000:])
                if not soft:
                    return False
                self.record(name, done=True)  # a measurement beside the loop: recorded, and the loop goes on
            finally:
                prev = self.st["steps"].setdefault(name, {})
                prev["wall_s"] = round(prev.get("wall_s", 0) + time.monotonic() - started, 1)
                save_state(self.st)
            log(f"step {name} done in {time.monotonic() - started:.1f}s")
        return True


def gpu_total_gib() -> float:
    with contextlib.suppress(Exception):
        r = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=10)
        return float(r.stdout.split()[0]) / 1024
    return 0.0


# ----------------------------------------------------------------------------------------------- collect


def tail(path: Path, n: int = 4000) -> str:
    if not path.exists():
        return f"({path} missing)"
    data = path.read_bytes()
    return data[-n:].decode(errors="replace")


def collect(out: Path, st: dict) -> None:
    """At most 8 files back: status, runs, logs (tails), trainer output, and new trajectories."""
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):
        st["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,memory.used,utilization.gpu",
                                    "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout.strip()
    (out / "status.json").write_text(json.dumps(st, indent=1))
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for run in sorted(RUNS.glob("*")) if RUNS.exists() else []:
            for f in sorted(run.iterdir()):
                if f.is_file():
                    tar.add(f, arcname=f"{run.name}/{f.name}")
        for f in [W / "m500-strict.jsonl", W / "m500-relaxed.jsonl"]:
            if f.exists() and f.stat().st_size < 12 << 20:
                tar.add(f, arcname=f"train/{f.name}")
        for f in sorted((W / "synthetic").glob("*.json")) + sorted(W.glob("gateway-*/*.json")):
            tar.add(f, arcname=f"perf/{f.parent.name}-{f.name}")
        for f in [W / "sft" / "metrics.jsonl", W / "sft" / "summary.json", W / "base" / "conversion.json"]:
            if f.exists():
                tar.add(f, arcname=f"train/{f.parent.name}-{f.name}")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        logs = sorted(LOGS.glob("*.log")) if LOGS.exists() else []
        logs += [f for stack in ("stack-base", "stack-tuned") for f in sorted((W / stack / "logs").glob("*"))]
        for f in logs:
            if f.is_file():
                data = tail(f, 400_000).encode()
                info = tarfile.TarInfo(f"logs/{f.name}" if f.parent == LOGS else f"{f.parent.parent.name}/{f.name}")
                info.size = len(data)
                import io

                tar.addfile(info, io.BytesIO(data))
    seen = set(st["collected"])
    new = [f for stack in ("stack-base", "stack-tuned") for f in sorted((W / stack / "archive").glob("*.json"))
           if f.name not in seen]
    for _ in range(4):  # at most 4 archive files: 8 files come back in all
        if not new:
            break
        path, size = out / f"archive-{len(st['collected']):05d}.tar.gz", 0
        with tarfile.open(path, "w:gz") as tar:
            while new and size < 60 << 20:  # raw bytes; gzip takes JSON trajectories to well under 16 MiB
                f = new.pop(0)
                tar.add(f, arcname=f"{f.parent.parent.name}/archive/{f.name}")
                size += f.stat().st_size
                st["collected"].append(f.name)
        save_state(st)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpurun.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=Path, default=Path(".gpuw"))
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("stash", help="move this call's parts, install what is complete")
    g = sub.add_parser("go", help="advance the pipeline until the deadline, then collect into $OUT")
    g.add_argument("--deadline-s", type=float, default=540)
    g.add_argument("--only", nargs="*", default=[], help="run only these steps")
    g.add_argument("--skip", nargs="*", default=[],
                   help="skip these soft steps (seed, synthetic-base-team, ablations, audit, base-vote, grounded-vote, base-others, "
                        "gateway-base, gateway-base-w2, gateway-tuned) for a short lease")
    args = p.parse_args(argv)
    W.mkdir(parents=True, exist_ok=True)
    stash(args.stage)
    if args.cmd == "stash":
        return 0
    pipe = Pipeline(args.stage, args.deadline_s)
    finished = pipe.go(args.only, args.skip)
    if finished and REHEARSAL:  # a device machine goes back with its servers; a rehearsal's host stays
        for key in ("stack-base", "stack-tuned"):
            stop(pipe.st["steps"].get(key, {}).get("pid"))
    if os.environ.get("OUT"):
        collect(Path(os.environ["OUT"]), load_state())
    print(json.dumps({k: {kk: v for kk, v in s.items() if kk not in ("summaries",)} for k, s in pipe.st["steps"].items()},
                     indent=None)[-3000:])
    log("pipeline done" if finished else "pipeline not finished: repeat this call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
