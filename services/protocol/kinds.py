"""The one table of problem kinds: the wire enum and the name profiles, datasets and the CLI use."""

from __future__ import annotations

from conclave.v1 import problem_pb2

# name -> wire enum; the order is the enum's.
KIND_BY_NAME: dict[str, int] = {
    "math": problem_pb2.PROBLEM_KIND_MATH,
    "multiple_choice": problem_pb2.PROBLEM_KIND_MULTIPLE_CHOICE,
    "code": problem_pb2.PROBLEM_KIND_CODE,
    "open_ended": problem_pb2.PROBLEM_KIND_OPEN_ENDED,
}
NAMES: tuple[str, ...] = tuple(KIND_BY_NAME)
NAME_BY_KIND: dict[int, str] = {v: k for k, v in KIND_BY_NAME.items()}
# Short names `conclave solve --kind` accepts besides the full ones.
SHORT_NAMES: dict[str, str] = {"choice": "multiple_choice", "open": "open_ended"}
# What a problem of an unknown or unset kind is treated as.
FALLBACK = "open_ended"


def kind_name(problem: problem_pb2.Problem) -> str:
    return NAME_BY_KIND.get(problem.kind, FALLBACK)


def kind_value(name: str) -> int:
    """The wire enum of a full or short kind name (KeyError for neither)."""
    return KIND_BY_NAME[SHORT_NAMES.get(name, name)]
