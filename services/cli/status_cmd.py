"""`conclave status`: what each service really did (its JetStream consumer), its live replicas, the model
pods behind the gateway, and NATS/JetStream. services/stack/status.py gathers it."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os

from services.bus.address import nats_url_from_env


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats-url", default=nats_url_from_env())
    p.add_argument("--inference-addr", default=os.environ.get("CONCLAVE_INFERENCE_ADDR", "127.0.0.1:50051"),
                   help="the gateway, asked for its model pods (default: $CONCLAVE_INFERENCE_ADDR or "
                        "127.0.0.1:50051; '' to skip)")
    p.add_argument("--wait", type=float, default=0.5, help="seconds to collect discovery replies (default 0.5)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


async def _status(args: argparse.Namespace) -> int:
    from services.bus import permissions
    from services.client.connect import connect, default_state_dir
    from services.security.grpc_tls import local_gateway_credentials
    from services.stack.status import gather

    state_dir = getattr(args, "state_dir", None) or default_state_dir()
    try:
        # Discovery, stream and consumer state are an operator's view: the admin credential.
        nc = await connect(args.nats_url, user=permissions.ADMIN, state_dir=state_dir, connect_timeout=2,
                           max_reconnect_attempts=0, allow_reconnect=False)
    except Exception as exc:
        print(f"conclave status: cannot reach NATS at {args.nats_url}: {exc}")
        return 1
    try:
        status = await gather(nc, inference_addr=args.inference_addr, wait_s=args.wait,
                              credentials=local_gateway_credentials(state_dir))
    finally:
        await nc.close()
    if args.json:
        doc = dataclasses.asdict(status)
        for svc, work in zip(doc["services"], status.services, strict=True):
            svc.update(done=work.done, errors=work.errors)
        print(json.dumps(doc, indent=2))
    else:
        _render(status)
    return 0


def _render(status) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="Services: messages handled by the live replicas (since they started), and their queues",
              caption="errors: retried, rejected or dead-lettered; waiting/redelivered: the JetStream consumer")
    for col in ("service", "replicas", "consumer", "done", "errors", "in flight", "waiting", "redelivered"):
        t.add_column(col, justify="left" if col in ("service", "consumer") else "right")
    for s in status.services:
        queue = ("-", "-") if not s.consumer or s.missing else (str(s.pending), str(s.redelivered))
        consumer = f"{s.consumer} (missing)" if s.missing else s.consumer or "-"
        t.add_row(s.name, str(s.replicas), consumer, str(s.done), str(s.errors), str(s.in_flight), *queue)
    console.print(t)

    mp = status.model_pods
    if mp is not None:
        t = Table(title=f"Model pods behind the gateway at {mp.address}: {mp.serving}")
        for col in ("model", "pods", "in rotation"):
            t.add_column(col)
        for model, (pods, healthy) in sorted(mp.models.items()):
            t.add_row(model, ", ".join(pods) or "-", f"{len(healthy)} of {len(pods)}")
        console.print(t)

    n = status.nats
    where = f"{n.url} (server {n.server or '?'} {n.version}{', cluster ' + n.cluster if n.cluster else ''})"
    t = Table(title=f"NATS {where}, JetStream {'on' if n.jetstream else 'OFF'}")
    for col in ("stream", "messages", "bytes", "consumers", "dead letters from it"):
        t.add_column(col, justify="left" if col == "stream" else "right")
    for s in n.streams:
        t.add_row(s.name, str(s.messages), str(s.bytes), str(s.consumers), str(n.dead_letters.get(s.name, 0)))
    console.print(t)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args))
