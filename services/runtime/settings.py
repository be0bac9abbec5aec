"""Typed settings shared by every service: environment (CONCLAVE_*) first, then an optional YAML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from services.bus.address import DEFAULT_NATS_URL
from services.bus.topology import BusTiming
from services.runtime.event_loop import Wanted
from services.runtime.worker import PULL_REQUESTS


def _config_file() -> Path | None:
    path = os.environ.get("CONCLAVE_CONFIG")
    return Path(path) if path else None


class RuntimeSettings(BaseSettings):
    """What every Conclave process needs. Service settings subclass this."""

    model_config = SettingsConfigDict(env_prefix="CONCLAVE_", env_nested_delimiter="__", extra="ignore")

    nats_url: str = Field(DEFAULT_NATS_URL, description="NATS server URL(s), comma separated.")
    nats_connect_timeout_s: float = 5.0
    # Security (docs/security.md). `conclave up` sets these for the services it starts; in Kubernetes the
    # Deployments set them from Secrets. Unset: an anonymous plaintext connection (a server that requires
    # TLS and users refuses it).
    nats_user: str = Field("", description="NATS user; default: the service's own name (services/bus/permissions.py).")
    nats_password: SecretStr = Field(SecretStr(""), description="NATS password of nats_user.")
    nats_credentials_dir: Path | None = Field(
        None, description="Directory of <user>.json NATS credentials (conclave up writes .state/security/nats).")
    nats_tls_ca: Path | None = Field(None, description="CA certificate of the NATS server; set means TLS.")
    nats_tls_hostname: str = Field(
        "", description="Name to verify the NATS certificate against, when the URL's host differs (a port-forward).")
    # Towards the inference gateway (CEO and agents): where, how long a call may take, and TLS when the CA
    # is set, mTLS with cert and key.
    inference_addr: str = Field("127.0.0.1:50051", description="host:port of the inference gateway")
    model_call_timeout_s: float = Field(600.0, description="gRPC deadline of one model call, its whole "
                                        "stream; past it the call fails with FAILURE_REASON_TIMEOUT")
    gateway_tls_ca: Path | None = Field(None, description="CA certificate of the gateway; set means TLS.")
    gateway_tls_cert: Path | None = Field(None, description="This service's client certificate (mTLS).")
    gateway_tls_key: Path | None = Field(None, description="Private key of gateway_tls_cert.")
    bus_give_up_s: float = Field(120.0, description="how long a bus operation (publish, KV read or write) is "
                                 "retried through a NATS outage before it fails (services/bus/retry.py)")
    # Reconnect forever with backoff: a bus outage must not kill a service.
    nats_max_reconnect_attempts: int = -1
    nats_reconnect_wait_s: float = 1.0
    instance: str = Field("", description="Instance name for logs and discovery; default host-pid.")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, description="Port of /metrics, /healthz, /readyz; 0 picks a free one.")
    drain_grace_s: float = Field(20.0, description="How long SIGTERM waits for in-flight work.")
    event_loop: Wanted = Field("auto", description="the process's event loop: uvloop (libuv, the faster), "
                               "asyncio (Python's own), or auto: uvloop except in a service that starts "
                               "subprocesses (the executor); services/runtime/event_loop.py")
    log_level: str = "INFO"
    log_json: bool = True
    concurrency: int = Field(8, description="Messages one process works on at once.")
    pull_requests: int = Field(PULL_REQUESTS, description="Pull requests each work consumer of a process keeps waiting "
                               "on the server (at most `concurrency`): with one, of two messages that arrive "
                               "together (the critics of a round) the second waits a round trip.")
    declare_bus: bool = Field(True, description="Create/update streams, consumers and buckets at start-up.")
    # Bus timing: the defaults are BusTiming's (services/bus/topology.py documents each).
    ack_wait_s: float = BusTiming.ack_wait_s
    max_deliver: int = BusTiming.max_deliver
    backoff_s: tuple[float, ...] = BusTiming.backoff_s
    duplicate_window_s: float = BusTiming.duplicate_window_s
    stream_replicas: int = Field(BusTiming.replicas, description="copies of each stream/bucket; 3 in a 3-node NATS cluster")
    problem_queue_limit: int = Field(BusTiming.problem_queue_limit,
                                     description="problems queued at most; past it intake answers busy")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[Any] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def bus_timing(self) -> BusTiming:
        return BusTiming(
            ack_wait_s=self.ack_wait_s,
            max_deliver=self.max_deliver,
            backoff_s=tuple(self.backoff_s),
            duplicate_window_s=self.duplicate_window_s,
            replicas=self.stream_replicas,
            problem_queue_limit=self.problem_queue_limit,
        )

    def instance_name(self, service: str) -> str:
        return self.instance or f"{service}-{os.uname().nodename}-{os.getpid()}"
