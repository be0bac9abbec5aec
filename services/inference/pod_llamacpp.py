"""A CPU model pod: llama.cpp's own OpenAI-compatible server, run in-process through the xllamacpp wheel.

Serves /v1/chat/completions, /v1/completions, /health, /metrics, /slots, /tokenize and /apply-template
with continuous batching over --parallel slots (each slot gets ctx/parallel tokens of context).

    python -m services.inference.pod_llamacpp --model tiny --port 8081
    python -m services.inference.pod_llamacpp --model qwen0.5b --port 8081 --parallel 4 --ctx 16384

--model takes a name (tiny: SmolLM2-135M, qwen0.5b: Qwen2.5-Coder-0.5B, 1.5b) or a GGUF path. The process
serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from services.inference import models

log = logging.getLogger("pod_llamacpp")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m services.inference.pod_llamacpp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=models.DEFAULT,
                   help=f"{', '.join(models.MODELS)} or a path to a .gguf file (default {models.DEFAULT})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8081, help="HTTP port (default 8081)")
    p.add_argument("--parallel", type=int, default=4, help="slots decoded together (default 4)")
    p.add_argument("--ctx", type=int, default=16384, help="total KV context, split over the slots (default 16384)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="CPU threads (default: all cores)")
    p.add_argument("--poll", type=int, default=50,
                   help="0-100: how much idle threads spin before sleeping (llama.cpp default 50); 0 suits hosts "
                        "shared with other busy processes")
    p.add_argument("--alias", default="", help="model id announced in /v1/models (default: the model's name)")
    p.add_argument("--http-threads", type=int, default=0,
                   help="HTTP worker threads (default 2*parallel+4; llama.cpp's own default starves small hosts)")
    p.add_argument("--api-key-file", type=Path, default=None,
                   help="require this bearer key (file content) on every request but /health (conclave up passes "
                        "<state>/security/pod-api-key; a file, so the key is not in the process list)")
    p.add_argument("--verbose", action="store_true", help="llama.cpp info logs (one line per request and more)")
    return p


def make_params(args: argparse.Namespace, gguf: str, alias: str):  # type: ignore[no-untyped-def]
    import xllamacpp as x

    p = x.CommonParams()
    p.model.path = gguf
    p.model_alias = {alias}
    p.n_parallel = args.parallel
    p.n_ctx = args.ctx
    p.cont_batching = True
    p.endpoint_metrics = True
    p.endpoint_slots = True
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.cpuparams.poll = args.poll
    p.cpuparams_batch.poll = args.poll
    p.port = args.port
    p.hostnames = [args.host]
    # One HTTP thread per streaming request plus room for /health and /metrics; with llama.cpp's default
    # (cores - 1) a 2-core host serves one stream and drops the other connections.
    p.n_threads_http = args.http_threads or 2 * args.parallel + 4
    # Thinking stays inline in the text: the gateway splits it, not the pod.
    p.reasoning_format = x.common_reasoning_format.COMMON_REASONING_FORMAT_NONE
    p.verbosity = 3 if args.verbose else 2
    if args.api_key_file is not None:
        p.api_keys = [args.api_key_file.read_text(encoding="utf-8").strip()]
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        gguf, spec = models.resolve(args.model)
    except models.ModelMissing as exc:
        print(f"pod_llamacpp: {exc}", file=sys.stderr)
        return 2
    alias = args.alias or (spec.served_name if spec else gguf.stem)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    import xllamacpp as x

    started = time.perf_counter()
    server = x.Server(make_params(args, str(gguf), alias))  # loads the model, then serves from its own threads
    print(json.dumps({"event": "ready", "url": f"http://{args.host}:{args.port}", "model": alias,
                      "gguf": str(gguf), "parallel": args.parallel, "ctx": args.ctx,
                      "load_s": round(time.perf_counter() - started, 2)}), flush=True)
    while not stop.wait(3600):
        pass
    log.info("stopping")
    del server  # the destructor stops the HTTP server and frees the model
    return 0


if __name__ == "__main__":
    sys.exit(main())
