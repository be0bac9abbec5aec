"""The CEO's metrics. Labels stay bounded: actions, stop reasons, roles; never a problem id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class CeoMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter("conclave_ceo_decisions", "CEO decisions, by action.", ["action"], registry=registry)
        self.finished = Counter("conclave_problems_finished", "Problems finished, by stop reason.", ["stop_reason"],
                                registry=registry)
        self.fallbacks = Counter("conclave_parse_fallbacks", "Protocol fallbacks used after unparsable replies.",
                                 ["role"], registry=registry)
        self.resumed = Counter("conclave_problems_resumed", "Problems resumed from KV state after a redelivery.",
                               registry=registry)
        self.overruled = Counter("conclave_acceptances_overruled", "Turns the evaluator accepted but failing "
                                 "tests kept open (profiles with require_passing_tests).", registry=registry)
        self.reports_rejected = Counter("conclave_reports_rejected", "Turns the evaluator accepted but whose "
                                        "report lacked a section or was cut off (profiles with structured_report).",
                                        registry=registry)
        self.active = Gauge("conclave_problems_active", "Problems this replica is running.", registry=registry)
        self.seconds = Histogram("conclave_problem_seconds", "Wall time per problem.", registry=registry,
                                 buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600))
        self.turns = Histogram("conclave_problem_turns", "Turns per problem.", registry=registry,
                               buckets=(1, 2, 3, 4, 6, 8))
