"""What `conclave status` shows: the work each service really did (its JetStream consumer), its live
replicas (NATS micro discovery), the model pods behind the gateway, and NATS/JetStream itself.

Work counts come from the consumers, not from micro endpoint stats: the services work through
JetStream, so their endpoint counters stay at zero whatever they did.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from conclave.v1 import inference_pb2, inference_pb2_grpc
from services.bus import topology
from services.bus.topology import ConsumerSpec
from services.stack.discovery import discover

# The services that work through a JetStream consumer, and that consumer.
CONSUMERS: dict[str, ConsumerSpec] = {"ceo": topology.CEO_CONSUMER, **topology.ROLE_CONSUMERS,
                                      "archiver": topology.ARCHIVER_CONSUMER}


@dataclass
class ServiceWork:
    name: str
    replicas: int = 0
    consumer: str = ""
    # Reported by the live replicas (since each started): messages by outcome (ack, retry, rejected, dead,
    # handed_back) and messages being worked on now.
    handled: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    # From the JetStream consumer (all replicas, past ones too): waiting to be fetched, delivered but not yet
    # acked, redelivered and not yet acked, deliveries in all (redeliveries included).
    pending: int = 0
    ack_pending: int = 0
    redelivered: int = 0
    deliveries: int = 0
    missing: bool = False  # the consumer does not exist (the bus was never declared)

    @property
    def done(self) -> int:
        return self.handled.get("ack", 0)

    @property
    def errors(self) -> int:
        return sum(n for outcome, n in self.handled.items() if outcome in ("retry", "rejected", "dead"))


@dataclass
class StreamState:
    name: str
    messages: int
    bytes: int
    consumers: int


@dataclass
class ModelPods:
    address: str
    serving: str = ""  # the gateway's gRPC health: SERVING, NOT_SERVING, or why it could not be asked
    models: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)  # model -> (pods, healthy)


@dataclass
class NatsState:
    url: str
    server: str = ""
    version: str = ""
    cluster: str = ""
    jetstream: bool = False
    streams: list[StreamState] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)  # source stream -> dead letters


@dataclass
class StackStatus:
    services: list[ServiceWork]
    nats: NatsState
    model_pods: ModelPods | None


async def gather(nc: Client, *, inference_addr: str = "", wait_s: float = 0.5,
                 credentials: grpc.ChannelCredentials | None = None) -> StackStatus:
    works: dict[str, ServiceWork] = {name: ServiceWork(name=name) for name in CONSUMERS}
    for svc in await discover(nc, wait_s):
        name = svc.name.removeprefix("conclave-")
        work = works.setdefault(name, ServiceWork(name=name))
        work.replicas += 1
        for worker in svc.work:
            work.in_flight += int(worker.get("in_flight", 0))
            for outcome, n in (worker.get("handled") or {}).items():
                work.handled[outcome] = work.handled.get(outcome, 0) + int(n)
    js = nc.jetstream()
    for name, spec in CONSUMERS.items():
        work = works[name]
        work.consumer = f"{spec.stream}/{spec.durable}"
        try:
            info = await js.consumer_info(spec.stream, spec.durable)
        except NotFoundError:
            work.missing = True
            continue
        work.pending = info.num_pending or 0
        work.ack_pending = info.num_ack_pending or 0
        work.redelivered = info.num_redelivered or 0
        work.deliveries = info.delivered.consumer_seq if info.delivered else 0
    services = [works[name] for name in sorted(works)]
    return StackStatus(services=services, nats=await _nats_state(nc),
                       model_pods=await model_pods(inference_addr, credentials=credentials) if inference_addr else None)


async def _nats_state(nc: Client) -> NatsState:
    info = nc._server_info or {}  # what the server sent on connect (nats-py keeps it there)
    state = NatsState(url=str(nc.connected_url.geturl() if nc.connected_url else ""), server=info.get("server_name", ""),
                      version=info.get("version", ""), cluster=info.get("cluster", ""),
                      jetstream=bool(info.get("jetstream")))
    js = nc.jetstream()
    for spec in topology.STREAMS:
        try:
            si = await js.stream_info(spec.name)
        except NotFoundError:
            continue
        state.streams.append(StreamState(spec.name, si.state.messages, si.state.bytes, si.state.consumer_count))
    with contextlib.suppress(NotFoundError):
        si = await js.stream_info(topology.DEADLETTER.name, subjects_filter=">")
        for subject, count in (si.state.subjects or {}).items():
            state.dead_letters[subject.rsplit(".", 1)[-1].upper()] = count
    return state


async def model_pods(address: str, timeout_s: float = 3.0,
                     credentials: grpc.ChannelCredentials | None = None) -> ModelPods:
    """Asks the gateway (gRPC health and ListModels) which model pods it has and which are in rotation;
    `credentials`: TLS/mTLS towards a gateway that requires it (docs/security.md)."""
    out = ModelPods(address=address)
    channel_ctx = grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
    async with channel_ctx as channel:
        try:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                                     timeout=timeout_s)
            out.serving = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
            listed = await inference_pb2_grpc.InferenceStub(channel).ListModels(
                inference_pb2.ListModelsRequest(), timeout=timeout_s)
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "TIMEOUT"
            out.serving = f"unreachable ({code})"
            return out
    out.models = {m.id: (list(m.pods), list(m.healthy_pods)) for m in listed.models}
    return out
