"""Every runnable Conclave service, by name. `conclave serve NAME` and the local stack read this table;
each entry is imported lazily so that one service's dependencies never load in another's process."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    target: str  # "module:build" where build(settings=None) returns a Service
    help: str
    # Replicas `conclave up` starts by default.
    replicas: int = 1
    # Starts subprocesses while serving (the executor's sandboxes): runs on Python's own event loop by default
    # (services/runtime/event_loop.py says why).
    spawns_processes: bool = False

    def build(self) -> Callable[..., Any]:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


SERVICES: dict[str, ServiceEntry] = {
    e.name: e
    for e in (
        ServiceEntry("intake", "services.intake.service:build", "validates published problems and queues them"),
        ServiceEntry("inference", "services.inference.service:build", "the gRPC gateway in front of the model pods"),
        ServiceEntry("ceo", "ceo.service:build", "runs each problem's loop: turns, team size, direction, budgets"),
        ServiceEntry("recruiter", "services.agents.service:build_recruiter", "names the experts of each turn"),
        ServiceEntry("solver", "services.agents.service:build_solver", "writes and revises the solution"),
        ServiceEntry("critic", "services.agents.service:build_critic", "reviews the solution: [Agree]/[Disagree]",
                     replicas=2),
        ServiceEntry("executor", "services.agents.service:build_executor", "runs code solutions in a sandbox",
                     spawns_processes=True),
        ServiceEntry("evaluator", "services.agents.service:build_evaluator", "judges the solution of each turn"),
        ServiceEntry("single", "services.agents.service:build_single", "the single-agent baseline"),
        ServiceEntry("archiver", "services.archiver.service:build", "writes every trajectory to the archive"),
        ServiceEntry("openai-door", "services.openai_door.service:build",
                     "OpenAI-compatible HTTP API (/v1/chat/completions) answered by a team"),
    )
}


def get(name: str) -> ServiceEntry:
    try:
        return SERVICES[name]
    except KeyError:
        raise SystemExit(f"unknown service {name!r}; known: {', '.join(sorted(SERVICES))}") from None
