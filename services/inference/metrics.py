"""Prometheus metrics of the gateway, on the process registry (never the global one).

Labels stay bounded: model (names the pods serve, else "other"), role (the Role enum), pod (host:port),
outcome and reason from fixed sets. Never a problem id or session key.
Per-pod gauges are read from the pool at scrape time, so the request path pays nothing for them and
pods that disappear from DNS disappear from the metrics.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.inference.pods import PodPool

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TOKEN_TIME = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
_E2E = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class PodCollector(Collector):
    def __init__(self, pool: PodPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        # "backend", not "pod": Prometheus's Kubernetes discovery already sets `pod` to the gateway's own.
        inflight = GaugeMetricFamily("conclave_inference_in_flight", "Requests running on each model pod.",
                                     labels=["backend"])
        queued = GaugeMetricFamily("conclave_inference_queue_depth", "Requests waiting for a slot on each pod.",
                                   labels=["backend"])
        healthy = GaugeMetricFamily("conclave_inference_pod_healthy", "1 when the pod is in rotation.",
                                    labels=["backend"])
        for pod in self._pool:
            inflight.add_metric([pod.name], pod.slots.inflight)
            queued.add_metric([pod.name], pod.slots.queued)
            healthy.add_metric([pod.name], 1.0 if pod.healthy else 0.0)
        yield from (inflight, queued, healthy)

    def describe(self) -> Iterator[Metric]:
        return iter(())


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry, pool: PodPool) -> None:
        self.requests = Counter("conclave_inference_requests", "Generate calls by model, role and outcome "
                                "(ok, cancelled, rejected, ceiling, error, invalid, deadline).",
                                ["model", "role", "outcome"], registry=registry)
        self.ttft = Histogram("conclave_inference_ttft_seconds", "Time to the first streamed token.",
                              ["model"], buckets=_LATENCY, registry=registry)
        self.inter_token = Histogram("conclave_inference_inter_token_seconds",
                                     "Mean time between streamed tokens of a call (after the first).",
                                     ["model"], buckets=_TOKEN_TIME, registry=registry)
        self.e2e = Histogram("conclave_inference_request_seconds", "Whole Generate calls.", ["model", "role"],
                             buckets=_E2E, registry=registry)
        self.prompt_tokens = Counter("conclave_inference_prompt_tokens", "Prompt tokens, as the pods counted them.",
                                     ["model", "role"], registry=registry)
        self.completion_tokens = Counter("conclave_inference_completion_tokens", "Generated tokens, forced "
                                         "extra tokens included.", ["model", "role"], registry=registry)
        self.extra_tokens = Counter("conclave_inference_extra_tokens", "Tokens generated after budget forcing "
                                    "closed the thinking.", ["model", "role"], registry=registry)
        self.retries = Counter("conclave_inference_retries", "Calls moved to another pod before their first "
                               "token, by the pod that failed.", ["backend"], registry=registry)
        self.ejections = Counter("conclave_inference_ejections", "Pods taken out of rotation.", ["backend"],
                                 registry=registry)
        self.rejections = Counter("conclave_inference_rejections", "Calls refused, by reason (admission, "
                                  "ceiling, unledgered_ceiling, no_pods).", ["reason"], registry=registry)
        self.routed = Counter("conclave_inference_routed", "Calls placed on a pod, by what routed them "
                              "(session, prefix, none) and outcome (home: the pod affinity chose; moved: another, "
                              "since that one was full; none).", ["by", "outcome"], registry=registry)
        self.forced = Counter("conclave_inference_budget_forced", "Calls whose thinking was closed by budget "
                              "forcing.", ["model"], registry=registry)
        # Read at scrape time from the servicer (set_function); from stream_hold_from on, messages are held.
        self.streams = Gauge("conclave_inference_streams", "Generate streams in flight in this gateway process "
                             "(one worker).", registry=registry)
        registry.register(PodCollector(pool))
