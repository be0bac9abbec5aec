"""Stream one completion through the inference gateway and print its usage.

    conclave infer "Write a haiku about NATS" --max-tokens 64
    conclave infer "Why?" --system "Answer briefly." --session problem-1 --addr 10.0.0.7:50051

The text streams to stdout as it arrives; usage (tokens, time to first token, pod) follows on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="the user message")
    p.add_argument("--max-tokens", type=int, default=256, help="completion budget (default 256)")
    p.add_argument("--model", default="", help="model id (default: the gateway's default model)")
    p.add_argument("--addr", default=os.environ.get("CONCLAVE_INFERENCE_ADDR", "127.0.0.1:50051"),
                   help="gateway host:port (default $CONCLAVE_INFERENCE_ADDR or 127.0.0.1:50051)")
    p.add_argument("--system", default="", help="system message")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the pod's)")
    p.add_argument("--session", default="", help="affinity key: calls with the same key share a pod")
    p.add_argument("--think", action="store_true", help="prefill <think> and use budget forcing")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before giving up (default 300)")


async def _infer(args: argparse.Namespace) -> int:
    import grpc

    from conclave.v1 import inference_pb2, inference_pb2_grpc
    from services.runtime.tracing import grpc_metadata

    messages = []
    if args.system:
        messages.append(inference_pb2.ChatMessage(role="system", content=args.system))
    messages.append(inference_pb2.ChatMessage(role="user", content=args.prompt))
    req = inference_pb2.GenerateRequest(model=args.model, messages=messages, max_tokens=args.max_tokens,
                                        session_key=args.session)
    if args.temperature is not None:
        req.temperature = args.temperature
    if args.think:
        req.reasoning.prefill_think = True
        req.reasoning.budget_forcing = True
    usage = None
    started = time.perf_counter()
    from services.client.connect import default_state_dir
    from services.security.grpc_tls import local_gateway_credentials

    credentials = local_gateway_credentials(default_state_dir())
    channel_ctx = grpc.aio.secure_channel(args.addr, credentials) if credentials else \
        grpc.aio.insecure_channel(args.addr)
    async with channel_ctx as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        try:
            async for resp in stub.Generate(req, timeout=args.timeout, metadata=grpc_metadata()):
                if resp.text:
                    sys.stdout.write(resp.text)
                    sys.stdout.flush()
                if resp.HasField("usage"):
                    usage = resp.usage
        except grpc.aio.AioRpcError as exc:
            print(f"\nconclave infer: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print()
    if usage is None:
        print("conclave infer: the stream ended without usage", file=sys.stderr)
        return 1
    extra = f" (+{usage.extra_tokens} forced)" if usage.extra_tokens else ""
    print(f"-- {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens{extra}, "
          f"finish={usage.finish_reason}, ttft={usage.ttft_s * 1000:.0f} ms, total={usage.total_s:.2f} s "
          f"(client {time.perf_counter() - started:.2f} s), pod={usage.pod}, model={usage.model}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_infer(args))
