"""Why a model call failed, as a typed reason (agents.proto FailureReason) that crosses the gRPC boundary.

The gateway names the reason of every error status in the trailing metadata; the client reads it back
(services/inference/client.py LlmError.reason). A status without one (the transport's own UNAVAILABLE or
DEADLINE_EXCEEDED) gets the reason its code implies.
"""

from __future__ import annotations

from collections.abc import Iterable

from conclave.v1 import agents_pb2

F = agents_pb2.FailureReason
METADATA_KEY = "conclave-failure-reason"

_BY_CODE: dict[str, int] = {
    "FAILED_PRECONDITION": agents_pb2.FAILURE_REASON_CEILING_REACHED,
    "RESOURCE_EXHAUSTED": agents_pb2.FAILURE_REASON_POD_UNAVAILABLE,
    "UNAVAILABLE": agents_pb2.FAILURE_REASON_POD_UNAVAILABLE,
    "DEADLINE_EXCEEDED": agents_pb2.FAILURE_REASON_TIMEOUT,
    "INVALID_ARGUMENT": agents_pb2.FAILURE_REASON_INVALID_REQUEST,
}
# Failures a retry of the same call cannot fix: the caller reports them rather than trying again.
FINAL: frozenset[int] = frozenset({agents_pb2.FAILURE_REASON_CEILING_REACHED,
                                   agents_pb2.FAILURE_REASON_BUDGET_EXHAUSTED,
                                   agents_pb2.FAILURE_REASON_INVALID_REQUEST})
# Failures that mean the problem's tokens are spent (the CEO stops with stop_reason token_ceiling).
OUT_OF_TOKENS: frozenset[int] = frozenset({agents_pb2.FAILURE_REASON_CEILING_REACHED,
                                           agents_pb2.FAILURE_REASON_BUDGET_EXHAUSTED})


def for_code(code: str) -> int:
    """The reason a gRPC status code implies when nothing more precise is known."""
    return _BY_CODE.get(code, agents_pb2.FAILURE_REASON_BAD_REPLY)


def to_metadata(reason: int) -> tuple[tuple[str, str], ...]:
    return ((METADATA_KEY, F.Name(reason)),)


def from_metadata(metadata: Iterable[tuple[str, str]] | None, code: str) -> int:
    for key, value in metadata or ():
        if key == METADATA_KEY and value in F.keys():
            return F.Value(value)
    return for_code(code)
