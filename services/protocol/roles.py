"""The one table of roles: the wire enum, and the name that is a role's work queue, service and NATS user."""

from __future__ import annotations

from conclave.v1 import agents_pb2

# The roles that have a work queue (conclave.tasks.<name>), in the order a turn asks them. The CEO
# consumes PROBLEMS instead.
WORKER_ROLE_BY_NAME: dict[str, int] = {
    "recruiter": agents_pb2.ROLE_RECRUITER,
    "solver": agents_pb2.ROLE_SOLVER,
    "critic": agents_pb2.ROLE_CRITIC,
    "executor": agents_pb2.ROLE_EXECUTOR,
    "evaluator": agents_pb2.ROLE_EVALUATOR,
    "single": agents_pb2.ROLE_SINGLE,
}
WORKER_ROLES: tuple[str, ...] = tuple(WORKER_ROLE_BY_NAME)
NAME_BY_ROLE: dict[int, str] = {v: k for k, v in WORKER_ROLE_BY_NAME.items()} | {agents_pb2.ROLE_CEO: "ceo"}


def role_name(role: int) -> str:
    """'solver' for ROLE_SOLVER (KeyError for ROLE_UNSPECIFIED)."""
    return NAME_BY_ROLE[role]
