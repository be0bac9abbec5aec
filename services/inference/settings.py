"""Settings of the inference gateway (environment CONCLAVE_*, or the YAML file named by CONCLAVE_CONFIG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from services.runtime.settings import RuntimeSettings

BackendKind = Literal["openai", "vllm", "scripted"]


class InferenceSettings(RuntimeSettings):
    grpc_host: str = Field("127.0.0.1", description="Address the gRPC server binds (0.0.0.0 in a container).")
    grpc_port: int = Field(50051, description="gRPC port; 0 picks a free one.")
    backend: BackendKind = Field("openai", description="openai: HTTP pods; vllm: in-process engine; scripted: tests.")
    # One process streams about 12-15 k tokens/s on a server core (one gRPC message per pod chunk); more
    # workers share the port (SO_REUSEPORT, workers.py). Each worker is a whole gateway: its own pod limits
    # and /metrics. Not with backend=vllm (the engine lives in one process).
    gateway_workers: int = Field(1, ge=1, le=64, description="Gateway processes sharing the gRPC port "
                                 "(CONCLAVE_GATEWAY_WORKERS); pod_max_inflight applies to each.")

    # Where the pods are: a static list, or a DNS name resolved to many addresses (a Kubernetes
    # headless service). CONCLAVE_PODS accepts "http://a:8081,http://b:8081" or a JSON list.
    pods: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Base URLs of the pods.")
    pods_dns: str = Field("", description="name:port resolved every dns_refresh_s to the pod set.")
    pods_scheme: str = Field("http", description="Scheme of the URLs built from pods_dns.")
    dns_refresh_s: float = 10.0
    # Bearer key sent to the pods (vLLM `--api-key`, llama.cpp `--api-key`); the file wins over the value.
    pod_api_key: SecretStr = Field(SecretStr(""), description="API key of the model pods.")
    pod_api_key_file: Path | None = Field(None, description="File holding the pods' API key (a mounted Secret).")

    # gRPC TLS (docs/security.md). With a certificate the port speaks TLS only; with grpc_client_ca it also
    # requires a client certificate signed by that CA (mTLS: only Conclave's services may call).
    grpc_server_cert: Path | None = Field(None, description="PEM certificate of the gRPC server; set means TLS.")
    grpc_server_key: Path | None = Field(None, description="PEM private key of grpc_server_cert.")
    grpc_client_ca: Path | None = Field(None, description="CA of the client certificates required (mTLS).")
    grpc_health_port: int = Field(
        0, description="Plaintext port serving only grpc.health.v1 (the kubelet's gRPC probe has no TLS); 0: none.")
    # A call without a ledger_key is not accounted against any problem: cap its worst case instead.
    unledgered_max_tokens: int = Field(
        49152, ge=1, description="Token ceiling of one call that names no ledger_key (prompt + completion).")

    ledger_settle_linger_s: float = Field(
        0.5, ge=0, description="How long a finished call's ledger commit may wait to ride on the problem's next "
        "reservation (one KV write instead of two); until written the entry over-counts, never under-counts.")

    default_model: str = Field("", description="Model for requests that name none; empty: the pods' first model.")
    context_length: int = Field(4096, description="Context window of one pod slot, for budget forcing.")

    # Admission: a pod takes at most pod_max_inflight requests (match the pod's parallel slots) and
    # pod_queue_limit waiting ones; beyond that the gateway answers RESOURCE_EXHAUSTED.
    pod_max_inflight: int = Field(4, ge=1)
    pod_queue_limit: int = Field(16, ge=0)
    virtual_nodes: int = Field(128, ge=1, description="Points per pod on the consistent-hash ring.")
    max_attempts: int = Field(3, ge=1, description="Pods tried when a call fails before its first token.")

    health_interval_s: float = 2.0
    health_timeout_s: float = 2.0
    # A pod busy with hundreds of streams can answer /health late (vLLM's API server at a full core did, on the
    # GPU: docs/gpu.md, seventh lease): one late probe is not a dead pod. A call that fails ejects at once.
    health_failure_threshold: int = Field(3, ge=1, description="Failed health probes in a row before a pod in "
                                          "rotation is ejected (as Kubernetes' failureThreshold); a pod that "
                                          "never passed a probe goes out at its first failure; one success "
                                          "brings an ejected pod back.")
    eject_base_s: float = Field(1.0, description="First ejection backoff; doubles per failure.")
    eject_max_s: float = 30.0

    connect_timeout_s: float = 2.0
    # Longest silence between two streamed chunks (prefill of a long prompt included).
    read_timeout_s: float = 300.0
    request_timeout_s: float = Field(900.0, description="Upper bound of one call when the client set no deadline.")

    # Under load every pod chunk (one token) would be one gRPC write; holding a stream's next message a little
    # lets the tokens that arrive meanwhile share it (coalesce.py). Measured with benchmarks/gateway_cpu.py.
    stream_hold_s: float = Field(
        0.02, ge=0, le=1, description="While busy (stream_hold_from), a stream's next message waits this long "
        "after its last so that the tokens arriving meanwhile share it; 0: never hold. The first never waits.")
    stream_hold_from: int = Field(
        16, ge=1, description="Streams in flight in this gateway process from which stream_hold_s applies.")

    force_margin: int = Field(200, description="Default budget-forcing margin (ReasoningOptions.force_margin).")
    count_tokens: Literal["pod", "estimate"] = Field(
        "pod", description="CountTokens: ask a pod's tokenizer, or estimate from characters."
    )
    chars_per_token: float = Field(3.5, description="For estimates: ledger reservations, CountTokens=estimate.")

    # The scripted backend (tests and demos only).
    scripted_file: str = Field("", description="YAML/JSON list of {pattern, response, role} rules.")
    scripted_latency_s: float = 0.0
    scripted_token_latency_s: float = 0.0

    # The in-process vLLM engine.
    vllm_model: str = ""
    vllm_max_model_len: int = 0
    vllm_gpu_memory_utilization: float = 0.9
    vllm_tensor_parallel_size: int = 1

    @field_validator("pods", mode="before")
    @classmethod
    def _split_pods(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [p.strip() for p in text.split(",") if p.strip()]
        return value

    @field_validator("pods")
    @classmethod
    def _normalise_pods(cls, value: list[str]) -> list[str]:
        return [p.rstrip("/") if "://" in p else f"http://{p}".rstrip("/") for p in value]
