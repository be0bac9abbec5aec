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
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

W = Path(os.environ.get("GPURUN_DIR", "/tmp/gpuw"))
VLLM_SITE = Path(os.environ.get("GPURUN_VLLM_SITE", "/tmp/site"))
SITE2 = W / "site2"
STATE = W / "state.json"
LOGS = W / "logs"
RUNS = W / "runs"
POD_PORT = 8000
NATS_URL = "nats://127.0.0.1:4222"
SERVED = "qwen2.5-coder-0.5b-instruct"
K_CAP = int(os.environ.get("GPURUN_K_CAP", "2048"))
LIMIT = int(os.environ.get("GPURUN_LIMIT", "0"))  # a rehearsal on a CPU evaluates the first N only
MIN_STRICT_PROBLEMS = 20  # below this, train on the relaxed M500 selection (and say so)
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


def pod_tokens() -> dict[str, float]:
    """vLLM's own counters: generated and prompt tokens so far."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{POD_PORT}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        for key in ("vllm:generation_tokens_total", "vllm:prompt_tokens_total"):
            if line.startswith(key):
                out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


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


class Pipeline:
    def __init__(self, stage: Path, deadline_s: float) -> None:
        self.stage = stage
        self.proj = W / "proj"
        self.manifest = json.loads((stage / "manifest.json").read_text())
        self.deadline = T0 + deadline_s
        self.st = load_state()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def record(self, step: str, **info) -> None:
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

    def serve(self, which: str) -> None:
        """vLLM on W/base or W/tuned, on POD_PORT, under one served name so the gateway needs no change."""
        key = f"serve-{which}"
        pid = self.st["steps"].get(key, {}).get("pid")
        if not alive(pid):
            for other in ("serve-base", "serve-tuned"):
                stop(self.st["steps"].get(other, {}).get("pid"))
            argv = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(W / which),
                    "--served-model-name", SERVED, "--port", str(POD_PORT), "--gpu-memory-utilization", "0.45",
                    "--max-model-len", "32768", "--max-num-seqs", "512", "--enable-prefix-caching",
                    "--generation-config", "vllm", "--disable-uvicorn-access-log"]
            env = env_for("vllm", self.proj) | {"VLLM_CACHE_ROOT": str(W / "vllm-cache")}
            pid = spawn(f"vllm-{which}", argv, env)
            self.record(key, pid=pid, started=time.time())
        self.wait_for(f"vLLM ({which}) to be healthy", lambda: http_ok(f"http://127.0.0.1:{POD_PORT}/health"), 2)
        if not self.st["steps"][key].get("healthy_after_s"):
            self.record(key, healthy_after_s=round(time.time() - self.st["steps"][key]["started"], 1))
        if which == "tuned":
            time.sleep(35)  # the gateway ejected the pod while it restarted; its backoff is at most 30 s
        self.record(key, done=True)

    def stack(self) -> None:
        pid = self.st["steps"].get("stack", {}).get("pid")
        if not alive(pid):
            env = env_for("app", self.proj) | {
                "CONCLAVE_POD_MAX_INFLIGHT": "192", "CONCLAVE_POD_QUEUE_LIMIT": "4096",
                "CONCLAVE_CONTEXT_LENGTH": "32768", "CONCLAVE_CONCURRENCY": "256"}
            pid = spawn("stack", [sys.executable, "-m", "services.cli.main", "up", "--pods",
                                  f"http://127.0.0.1:{POD_PORT}", "--state-dir", str(W / "stack"),
                                  "--nats-url", NATS_URL, "--k-cap", str(K_CAP)], env, cwd=self.proj)
            self.record("stack", pid=pid, started=time.time())
        logf = LOGS / "stack.log"
        self.wait_for("the Conclave stack", lambda: "services are up" in logf.read_text(errors="replace")
                      if logf.exists() else False, 1)
        self.record("stack", done=True)

    def revision(self, which: str) -> tuple[str, str]:
        if which == "base":
            return SERVED, self.manifest["model"]["sha256"][:12]
        weights = sorted((W / "tuned").glob("*.safetensors"))
        return f"{SERVED}+sft-m500", hashlib.sha256(b"".join(sha256_of(p).encode() for p in weights)).hexdigest()[:12]

    def eval(self, name: str, which: str, mode: str, split: str, concurrency: int) -> None:
        model, rev = self.revision(which)
        out = RUNS / name
        argv = [sys.executable, "-m", "services.cli.main", "eval", "--benchmark", "math500", "--split", split,
                "--mode", mode, "--concurrency", str(concurrency), "--timeout", "1800", "--out", str(out),
                "--model", model, "--revision", rev, "--nats-url", NATS_URL,
                "--data-dir", str(self.proj / "benchmarks" / "data"), *(["--limit", str(LIMIT)] if LIMIT else [])]
        before, started = pod_tokens(), time.monotonic()
        logf = (LOGS / f"eval-{name}.log").open("ab")
        proc = subprocess.Popen(argv, env=env_for("app", self.proj), cwd=self.proj, stdout=logf,
                                stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=max(1.0, self.left() - 5))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # graded problems are on disk; the next call resumes this run
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            proc.kill()
        after, secs = pod_tokens(), time.monotonic() - started
        prev = self.st["steps"].get(name, {})
        gen = after.get("vllm:generation_tokens_total", 0) - before.get("vllm:generation_tokens_total", 0)
        prompt = after.get("vllm:prompt_tokens_total", 0) - before.get("vllm:prompt_tokens_total", 0)
        self.record(name, seconds=round(prev.get("seconds", 0) + secs, 1),
                    generated_tokens=prev.get("generated_tokens", 0) + gen,
                    prompt_tokens=prev.get("prompt_tokens", 0) + prompt,
                    graded=len((out / "results.jsonl").read_text().splitlines()) if (out / "results.jsonl").exists() else 0)
        if proc.returncode != 0:
            raise Deadline(f"eval {name} stopped (rc {proc.returncode}); resumes next call\n"
                           f"{tail(LOGS / f'eval-{name}.log', 1500)}")
        s = self.st["steps"][name]
        self.record(name, done=True, pod_generated_tok_per_s=round(s["generated_tokens"] / max(s["seconds"], 1e-9), 1))

    def dataset(self) -> None:
        """The M500 selection over the team's training-half trajectories only (never the held-out half)."""
        results = RUNS / "base-mas-train" / "results.jsonl"
        archive, picked = W / "stack" / "archive", W / "train-archive"
        picked.mkdir(exist_ok=True)
        ids = [json.loads(line)["problem_id"] for line in results.read_text().splitlines() if line.strip()]
        copied = 0
        for pid in ids:
            src = archive / f"{pid}.json"
            if src.exists():
                shutil.copy2(src, picked / src.name)
                copied += 1
        env = env_for("app", self.proj)
        summaries = {}
        for label, extra in (("strict", []), ("relaxed", ["--allow", "format_broken", "--allow", "no_consensus"])):
            r = subprocess.run([sys.executable, "-m", "trainer.dataset", "--archive", str(picked), "--grades",
                                str(results), "--out", str(W / f"m500-{label}.jsonl"), *extra], env=env,
                               cwd=self.proj, capture_output=True, text=True)
            summaries[label] = (r.stdout + r.stderr)[-1500:]
            if r.returncode != 0:
                raise SystemExit(f"trainer.dataset ({label}) failed:\n{summaries[label]}")
        problems = {label: len({json.loads(x)["problem_id"] for x in (W / f"m500-{label}.jsonl").read_text().splitlines() if x})
                    for label in summaries}
        chosen = "strict" if problems["strict"] >= MIN_STRICT_PROBLEMS else "relaxed"
        self.record("dataset", done=True, trajectories=copied, summaries=summaries, problems=problems, chosen=chosen)

    def sft(self) -> None:
        stop(self.st["steps"].get("serve-base", {}).get("pid"))  # free the GPU for training
        chosen = self.st["steps"]["dataset"]["chosen"]
        argv = [sys.executable, "-m", "trainer.sft", "--data", str(W / f"m500-{chosen}.jsonl"),
                "--base-model", str(W / "base"), "--output", str(W / "sft"), "--epochs", "3", "--seq-len", "8192",
                "--global-batch", "16", "--micro-batch", "4", "--lr", "1e-5"]
        started = time.monotonic()
        with (LOGS / "sft.log").open("ab") as logf:
            r = subprocess.run(argv, env=env_for("app", self.proj), cwd=self.proj, stdout=logf,
                               stderr=subprocess.STDOUT, timeout=max(30.0, self.left()))
        if r.returncode != 0:
            raise SystemExit(f"trainer.sft failed:\n{tail(LOGS / 'sft.log')}")
        if (W / "tuned").exists():
            shutil.rmtree(W / "tuned")
        shutil.copytree(W / "sft" / "final", W / "tuned")
        self.record("sft", done=True, seconds=round(time.monotonic() - started, 1), argv=argv[2:],
                    summary=json.loads((W / "sft" / "summary.json").read_text()))

    def steps(self):
        return [
            ("convert", self.convert),
            ("serve-base", lambda: self.serve("base")),
            ("stack", self.stack),
            ("base-single-heldout", lambda: self.eval("base-single-heldout", "base", "single", "heldout", 192)),
            # The held-out half first, both modes: a paired single-against-team result even if the lease ends.
            ("base-mas-heldout", lambda: self.eval("base-mas-heldout", "base", "mas", "heldout", 96)),
            ("base-single-train", lambda: self.eval("base-single-train", "base", "single", "train", 192)),
            ("base-mas-train", lambda: self.eval("base-mas-train", "base", "mas", "train", 96)),
            ("dataset", self.dataset),
            ("sft", self.sft),
            ("serve-tuned", lambda: self.serve("tuned")),
            ("tuned-single-heldout", lambda: self.eval("tuned-single-heldout", "tuned", "single", "heldout", 192)),
            ("tuned-mas-heldout", lambda: self.eval("tuned-mas-heldout", "tuned", "mas", "heldout", 96)),
        ]

    def go(self, only: list[str]) -> bool:
        for name, fn in self.steps():
            if self.done(name) or (only and name not in only):
                continue
            log(f"step {name}")
            started = time.monotonic()
            try:
                fn()
            except Deadline as exc:
                log(f"deadline: {exc}")
                return False
            except (SystemExit, Exception) as exc:  # noqa: BLE001 - recorded, collected, shown; the call ends
                log(f"step {name} FAILED: {exc!r}"[:3000])
                self.record(name, error=repr(exc)[-3000:])
                return False
            finally:
                prev = self.st["steps"].setdefault(name, {})
                prev["wall_s"] = round(prev.get("wall_s", 0) + time.monotonic() - started, 1)
                save_state(self.st)
            log(f"step {name} done in {time.monotonic() - started:.1f}s")
        return True


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
        for f in [W / "sft" / "metrics.jsonl", W / "sft" / "summary.json", W / "base" / "conversion.json"]:
            if f.exists():
                tar.add(f, arcname=f"train/{f.parent.name}-{f.name}")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        logs = sorted(LOGS.glob("*.log")) + sorted((W / "stack" / "logs").glob("*")) if LOGS.exists() else []
        for f in logs:
            if f.is_file():
                data = tail(f, 400_000).encode()
                info = tarfile.TarInfo(f"{f.parent.name}/{f.name}")
                info.size = len(data)
                import io

                tar.addfile(info, io.BytesIO(data))
    archive = W / "stack" / "archive"
    new = [f for f in sorted(archive.glob("*.json")) if f.name not in set(st["collected"])] if archive.exists() else []
    for _ in range(4):  # at most 4 archive files: 8 files come back in all
        if not new:
            break
        path, size = out / f"archive-{len(st['collected']):05d}.tar.gz", 0
        with tarfile.open(path, "w:gz") as tar:
            while new and size < 60 << 20:  # raw bytes; gzip takes JSON trajectories to well under 16 MiB
                f = new.pop(0)
                tar.add(f, arcname=f"archive/{f.name}")
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
    args = p.parse_args(argv)
    W.mkdir(parents=True, exist_ok=True)
    stash(args.stage)
    if args.cmd == "stash":
        return 0
    pipe = Pipeline(args.stage, args.deadline_s)
    finished = pipe.go(args.only)
    if os.environ.get("OUT"):
        collect(Path(os.environ["OUT"]), load_state())
    print(json.dumps({k: {kk: v for kk, v in s.items() if kk not in ("summaries",)} for k, s in pipe.st["steps"].items()},
                     indent=None)[-3000:])
    log("pipeline done" if finished else "pipeline not finished: repeat this call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
