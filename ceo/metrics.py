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
        self.overruled = Counter("conclave_acceptances_overruled", "Turns the evaluator accepted but execution "
                                 "kept open: failing tests (require_passing_tests) or a contradicting check "
                                 "(executor: check), by kind of evidence.", ["evidence"], registry=registry)
        self.checks = Counter("conclave_checks", "Checks of math and choice answers run (executor: check), by "
                              "outcome: agrees, contradicts, inconclusive.", ["outcome"], registry=registry)
        self.final_votes = Counter("conclave_final_votes", "Final answers chosen by vote (final_answer: vote), by "
                                   "the rule that chose the winner and whether it replaced the team's last answer.",
                                   ["rule", "changed"], registry=registry)
        # Waiting for role replies (ceo/steps.py): how a NATS outage or a lost task shows.
        self.slow_steps = Counter("conclave_ceo_slow_steps", "Steps that waited longer than step_warn_s for "
                                  "their replies, by the role first missing.", ["role"], registry=registry)
        self.waiting_slow = Gauge("conclave_ceo_steps_waiting_slow", "Steps waiting now for longer than "
                                  "step_warn_s.", registry=registry)
        self.step_timeouts = Counter("conclave_ceo_step_timeouts", "Role replies that never came within "
                                     "step_timeout_s (the step fails), by role.", ["role"], registry=registry)
        self.tasks_republished = Counter("conclave_ceo_tasks_republished", "Role tasks published again after "
                                         "step_retry_s without a reply, by role.", ["role"], registry=registry)
        self.replies_recovered = Counter("conclave_ceo_replies_recovered", "Replies read from the REPLIES "
                                         "stream because the live subscription missed them, by occasion "
                                         "(reconnect, recheck).", ["how"], registry=registry)
        self.transient_retries = Counter("conclave_ceo_transient_retries", "Phases of a problem's loop "
                                         "repeated because the gateway was unavailable, by operation "
                                         "(model_call).", ["op"], registry=registry)
        self.duplicate_deliveries = Counter("conclave_ceo_duplicate_deliveries", "Problem messages delivered "
                                            "again while this replica still ran the problem (joined, not "
                                            "run twice).", registry=registry)
        self.reports_rejected = Counter("conclave_reports_rejected", "Turns the evaluator accepted but whose "
                                        "report lacked a section or was cut off (profiles with structured_report).",
                                        registry=registry)
        self.active = Gauge("conclave_problems_active", "Problems this replica is running.", registry=registry)
        self.seconds = Histogram("conclave_problem_seconds", "Wall time per problem.", registry=registry,
                                 buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600))
        self.oldest = Gauge("conclave_problem_oldest_running_seconds", "Age of the oldest problem this replica "
                            "is running (0 when idle): a problem stuck past its deadline shows here.",
                            registry=registry)
        self.team_size = Histogram("conclave_ceo_team_size", "Team size N the CEO chose per turn (after clamping).",
                                   registry=registry, buckets=(2, 3, 4, 5, 6, 8))
        self.budget = Histogram("conclave_ceo_budget_tokens", "Per-agent token budget K the CEO chose per turn.",
                                registry=registry, buckets=(1024, 2048, 4096, 8192, 16384, 32000, 65536))
        self.consensus = Counter("conclave_problems_consensus", "Finished problems by whether every turn's "
                                 "critics reached consensus within the allowed rounds.", ["consensus"],
                                 registry=registry)
        self.turns = Histogram("conclave_problem_turns", "Turns per problem.", registry=registry,
                               buckets=(1, 2, 3, 4, 6, 8))
