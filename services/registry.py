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

    def build(self) -> Callable[..., Any]:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


SERVICES: dict[str, ServiceEntry] = {
    e.name: e
    for e in (
        ServiceEntry("intake", "services.intake.service:build", "validates published problems and queues them"),
    )
}


def get(name: str) -> ServiceEntry:
    try:
        return SERVICES[name]
    except KeyError:
        raise SystemExit(f"unknown service {name!r}; known: {', '.join(sorted(SERVICES))}") from None
