"""Assembles the gateway (backend, pod pool, router, ledger, metrics) and runs its gRPC server.

Used by the service (with NATS, for the ledger) and directly by tests and the benchmark (without NATS).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from conclave.v1 import inference_pb2, inference_pb2_grpc
from services.inference.backends import make_backend
from services.inference.backends.base import Backend
from services.inference.gateway import Gateway, GatewayConfig
from services.inference.health import HealthChecker, dns_loop, refresh_dns
from services.inference.ledger import Ledger
from services.inference.metrics import InferenceMetrics
from services.inference.pods import PodPool
from services.inference.router import Router
from services.inference.server import InferenceServicer
from services.inference.settings import InferenceSettings

log = logging.getLogger(__name__)

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name
_MiB = 1024 * 1024


def server_credentials(s: InferenceSettings) -> grpc.ServerCredentials | None:
    """TLS for the gRPC port when a certificate is configured; mTLS when a client CA is too."""
    if s.grpc_server_cert is None:
        return None
    if s.grpc_server_key is None:
        raise RuntimeError("CONCLAVE_GRPC_SERVER_CERT is set but CONCLAVE_GRPC_SERVER_KEY is not")
    ca = s.grpc_client_ca.read_bytes() if s.grpc_client_ca else None
    return grpc.ssl_server_credentials([(s.grpc_server_key.read_bytes(), s.grpc_server_cert.read_bytes())],
                                       root_certificates=ca, require_client_auth=ca is not None)


def initial_pods(settings: InferenceSettings) -> list[str]:
    if settings.pods:
        return list(settings.pods)
    if settings.backend == "scripted":
        return ["scripted://local"]
    if settings.backend == "vllm":
        from services.inference.backends.vllm_engine import LOCAL_POD

        return [LOCAL_POD]
    return []


class InferenceApp:
    def __init__(self, settings: InferenceSettings, registry: CollectorRegistry | None = None, *,
                 backend: Backend | None = None, js: JetStreamContext | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.backend = backend or make_backend(settings)
        self.pool = PodPool(settings.pod_max_inflight, settings.pod_queue_limit, settings.eject_base_s,
                            settings.eject_max_s)
        self.pool.set_urls(initial_pods(settings))
        self.router = Router(self.pool, settings.virtual_nodes)
        self.metrics = InferenceMetrics(self.registry, self.pool)
        # A ledger_key no CEO opened gets the ceiling of a call without one.
        self.ledger = Ledger(js, settle_linger_s=settings.ledger_settle_linger_s,
                             default_ceiling=settings.unledgered_max_tokens) if js is not None else None
        self.health = HealthChecker(self.pool, self.backend, interval_s=settings.health_interval_s,
                                    failure_threshold=settings.health_failure_threshold,
                                    on_ejected=lambda pod: self.metrics.ejections.labels(pod.name).inc(),
                                    after_cycle=self._publish_health)
        self.gateway: Gateway | None = None
        self.server: grpc.aio.Server | None = None
        self._health_servicer = health.aio.HealthServicer()
        self._health_server: grpc.aio.Server | None = None
        self.port = 0
        self.health_port = 0

    @property
    def address(self) -> str:
        return f"{self.settings.grpc_host}:{self.port}"

    async def start(self) -> None:
        s = self.settings
        if s.pods_dns:
            await refresh_dns(self.pool, s.pods_dns, s.pods_scheme)
        if s.gateway_workers > 1 and s.backend == "vllm":
            raise RuntimeError("CONCLAVE_GATEWAY_WORKERS > 1 needs HTTP pods: the in-process vLLM engine is one "
                               "process's")
        if not len(self.pool) and not s.pods_dns:
            raise RuntimeError("no pods: set CONCLAVE_PODS (base URLs) or CONCLAVE_PODS_DNS (name:port)")
        await self.health.probe_due()
        default_model = s.default_model or next((p.models[0] for p in self.pool if p.models), "")
        known = {default_model} | {m for p in self.pool for m in p.models}
        self.gateway = Gateway(
            backend=self.backend, pool=self.pool, router=self.router, metrics=self.metrics, ledger=self.ledger,
            config=GatewayConfig(limit=s.pod_max_inflight, queue_limit=s.pod_queue_limit,
                                 max_attempts=s.max_attempts, context_length=s.context_length,
                                 chars_per_token=s.chars_per_token, unledgered_max_tokens=s.unledgered_max_tokens),
            known_models={m for m in known if m}, default_model=default_model,
        )
        # Several workers share the port (workers.py); a lone gateway refuses a port another process holds.
        reuse = ("grpc.so_reuseport", 1 if s.gateway_workers > 1 else 0)
        self.server = grpc.aio.server(options=[
            ("grpc.max_send_message_length", 64 * _MiB),
            ("grpc.max_receive_message_length", 64 * _MiB),
            reuse,
        ])
        inference_pb2_grpc.add_InferenceServicer_to_server(
            InferenceServicer(self.gateway, request_timeout_s=s.request_timeout_s, default_margin=s.force_margin,
                              context_length=s.context_length, count_mode=s.count_tokens,
                              chars_per_token=s.chars_per_token, hold_s=s.stream_hold_s,
                              hold_from=s.stream_hold_from),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health_servicer, self.server)
        credentials = server_credentials(s)
        bind = f"{s.grpc_host}:{s.grpc_port}"
        self.port = self.server.add_secure_port(bind, credentials) if credentials else \
            self.server.add_insecure_port(bind)
        if not self.port:
            raise RuntimeError(f"could not bind gRPC on {s.grpc_host}:{s.grpc_port}")
        await self.server.start()
        if s.grpc_health_port and credentials:
            # Only the health service, in plaintext: Kubernetes' gRPC probe cannot speak TLS.
            self._health_server = grpc.aio.server(options=[reuse])
            health_pb2_grpc.add_HealthServicer_to_server(self._health_servicer, self._health_server)
            self.health_port = self._health_server.add_insecure_port(f"{s.grpc_host}:{s.grpc_health_port}")
            await self._health_server.start()
        await self._publish_health()
        log.info("inference gateway serving", extra={
            "grpc": self.address, "tls": "mtls" if s.grpc_client_ca else "tls" if credentials else "off",
            "backend": self.backend.kind, "pods": [p.name for p in self.pool],
            "healthy": len(self.pool.healthy()), "default_model": default_model})

    async def background(self) -> None:
        """Health probes and DNS refresh; runs until cancelled."""
        tasks = [asyncio.create_task(self.health.run(), name="inference-health")]
        if self.settings.pods_dns:
            tasks.append(asyncio.create_task(
                dns_loop(self.pool, self.settings.pods_dns, self.settings.pods_scheme, self.settings.dns_refresh_s),
                name="inference-dns"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _publish_health(self) -> None:
        if self.gateway is not None:
            self.gateway.learn_models({m for p in self.pool for m in p.models})
        # Serving while any pod is in rotation: a gateway without pods should leave the load balancer.
        status = health_pb2.HealthCheckResponse.SERVING if self.pool.healthy() else \
            health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self._health_servicer.set(name, status)

    async def drain(self, grace_s: float) -> None:
        """Stops taking calls and lets the running ones finish within `grace_s`."""
        if self.server is None:
            return
        await self._health_servicer.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        self.server = None
        if self._health_server is not None:
            await self._health_server.stop(0)
            self._health_server = None

    async def close(self, grace_s: float = 0.0) -> None:
        await self.drain(grace_s)
        if self.gateway is not None:
            await self.gateway.settled()
        await self.backend.close()
