"""The `agent_stack` fixture: nats-server, the gateway on the scripted backend, and every agent service."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import nats

from conclave.v1 import outcome_pb2, problem_pb2
from services.bus import permissions, subjects, topology
from services.client.solve import solve
from tests.agents.gateway import scripted_gateway
from tests.agents.scripts import Script
from tests.agents.stack import AGENT_SERVICES, InProcessStack, ServiceProcess
from tests.conftest import FAST, fast_env


@dataclass
class AgentEnv:
    nc: nats.NATS  # admin: reads trajectories and stream state
    nats_env: dict[str, str]
    gateway_addr: str
    archive_dir: Path
    tmp: Path
    processes: dict[str, list[ServiceProcess]] = field(default_factory=dict)
    events: dict[str, list[outcome_pb2.ProgressEvent]] = field(default_factory=dict)
    # A user's program: submits with the public `client` credential, as documented.
    client: nats.NATS | None = None

    async def solve(self, problem: problem_pb2.Problem, timeout_s: float = 60) -> outcome_pb2.Result:
        async def record(ev: outcome_pb2.ProgressEvent) -> None:
            self.events.setdefault(ev.problem_id, []).append(ev)

        return await solve(self.client or self.nc, problem, on_event=record, timeout_s=timeout_s)

    async def wait_event(self, problem_id: str, type_: str, timeout_s: float = 30) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not any(e.type == type_ for e in self.events.get(problem_id, [])):
            if loop.time() > deadline:
                raise AssertionError(f"no {type_!r} event for {problem_id} within {timeout_s}s")
            await asyncio.sleep(0.02)

    async def trajectory(self, problem_id: str) -> outcome_pb2.Trajectory:
        raw = await self.nc.jetstream().get_last_msg(topology.TRAJECTORIES.name, subjects.trajectory(problem_id))
        return outcome_pb2.Trajectory.FromString(raw.data)

    async def count(self, problem_id: str) -> dict[str, int]:
        js = self.nc.jetstream()
        out = {}
        for key, stream, subject in (("results", topology.RESULTS.name, subjects.result(problem_id)),
                                     ("trajectories", topology.TRAJECTORIES.name, subjects.trajectory(problem_id))):
            info = await js.stream_info(stream, subjects_filter=subject)
            out[key] = (info.state.subjects or {}).get(subject, 0)
        return out

    def nats_settings(self) -> dict[str, str]:
        """RuntimeSettings fields (nats_url, credentials dir, CA) for a service the test builds itself."""
        return {k.removeprefix("CONCLAVE_").lower(): v for k, v in self.nats_env.items() if k.startswith("CONCLAVE_NATS_")}

    def gateway_credentials(self):  # noqa: ANN201
        """The gRPC credentials the services use towards the (mTLS) gateway."""
        from services.runtime.settings import RuntimeSettings
        from services.security.grpc_tls import gateway_credentials

        fields = {k.removeprefix("CONCLAVE_").lower(): v for k, v in self.nats_env.items()
                  if k.startswith("CONCLAVE_GATEWAY_TLS_")}
        return gateway_credentials(RuntimeSettings(**fields))

    def env(self) -> dict[str, str]:
        return {**fast_env(self.nats_env), "CONCLAVE_INFERENCE_ADDR": self.gateway_addr,
                "CONCLAVE_ARCHIVE_DIR": str(self.archive_dir), "CONCLAVE_STEP_TIMEOUT_S": "60",
                "CONCLAVE_DRAIN_GRACE_S": "2"}

    async def start_process(self, name: str) -> ServiceProcess:
        replicas = self.processes.setdefault(name, [])
        proc = ServiceProcess(name, self.env(), self.tmp / f"{name}-{len(replicas)}.log")
        await proc.start()
        replicas.append(proc)
        return proc

    async def wait_registered(self, count: int, timeout_s: float = 60) -> None:
        """Until `count` services answer NATS discovery (their workers are bound and serving)."""
        from services.stack.discovery import discover

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(await discover(self.nc, 0.3)) < count:
            if loop.time() > deadline:
                raise AssertionError(f"fewer than {count} services registered within {timeout_s}s")

    def kill(self, name: str) -> None:
        for proc in self.processes.get(name, []):
            proc.kill()


def agent_stack_factory(nats_server, tmp_path: Path):
    @contextlib.asynccontextmanager
    async def agent_stack(script: Script, *, latency_s: float = 0.0, as_processes: tuple[str, ...] = (),
                          without: tuple[str, ...] = (), env: dict[str, str] | None = None):
        nc = await nats.connect(nats_server.url, **nats_server.connect_options())
        await topology.declare(nc.jetstream(), FAST)
        sec = nats_server.security
        async with scripted_gateway(script, latency_s=latency_s, nats_url=nats_server.url, tmp=tmp_path,
                                    connect_options=nats_server.connect_options("inference"),
                                    tls_env=sec.gateway_server_env()) as addr:
            # In-process services share one environment, hence one gateway client certificate (the CEO's).
            shared = {**nats_server.env(), **sec.gateway_client_env("ceo")}
            client = await nats.connect(nats_server.url, **nats_server.connect_options(permissions.CLIENT))
            extra_env = env or {}
            env = AgentEnv(nc=nc, nats_env=shared, gateway_addr=addr, archive_dir=tmp_path / "archive",
                           tmp=tmp_path, client=client)
            stack = InProcessStack(shared, addr, env.archive_dir, env={"CONCLAVE_DRAIN_GRACE_S": "2", **extra_env})
            await stack.start([n for n in AGENT_SERVICES if n not in as_processes and n not in without])
            for name in as_processes:
                await env.start_process(name)
            try:
                yield env
            finally:
                for procs in env.processes.values():
                    for proc in procs:
                        await proc.stop()
                await stack.stop()
                await client.close()
                await nc.close()

    return agent_stack
