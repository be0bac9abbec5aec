"""What makes a Problem acceptable: the one place where input rules live. Errors are sentences a publisher
can act on. Intake checks every submission; the CEO checks again what reaches its queue directly.

Bounds are operator settings (CONCLAVE_LIMIT_*); the defaults are documented in docs/problems.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from conclave.v1 import problem_pb2
from services.bus.subjects import valid_problem_id
from services.protocol import profile as profiles

MAX_TEXT_CHARS = 200_000
# A profile name is a file name without its extension: no separators, no dots, no way out of the dirs.


class Limits(BaseSettings):
    """Upper (and lower) bounds on what one problem may ask for."""

    model_config = SettingsConfigDict(env_prefix="CONCLAVE_LIMIT_", extra="ignore", frozen=True)

    max_payload_bytes: int = Field(1_000_000, description="largest submission accepted (the PROBLEMS stream "
                                   "holds messages up to 1 MiB with their headers)")
    max_turns: int = Field(10, description="limits.max_turns and profile.max_turns at most")
    max_critic_rounds: int = Field(10, description="profile.critic_rounds at most")
    max_team: int = Field(8, description="profile.n_cap, n_min and initial_n at most")
    max_parse_retries: int = Field(5, description="profile.parse_retries at most")
    k_cap_min: int = Field(256, description="profile.k_cap at least")
    k_cap_max: int = Field(131_072, description="profile.k_cap at most")
    min_total_tokens: int = Field(1_000, description="limits.max_total_tokens at least (0 = the profile's)")
    max_total_tokens: int = Field(2_000_000, description="operator maximum of a problem's token ceiling: "
                                  "limits.max_total_tokens at most, and the cap on every profile's ceiling")
    max_deadline_s: float = Field(7 * 24 * 3600.0, description="limits.deadline_s at most (state lives 7 days)")


@cache
def default_limits() -> Limits:
    return Limits()


def _int_bounds(limits: Limits) -> dict[str, tuple[int, int]]:
    return {
        "max_turns": (1, limits.max_turns),
        "critic_rounds": (1, limits.max_critic_rounds),
        "n_cap": (1, limits.max_team),
        "n_min": (1, limits.max_team),
        "initial_n": (1, limits.max_team),
        "parse_retries": (0, limits.max_parse_retries),
        "k_cap": (limits.k_cap_min, limits.k_cap_max),
    }


def override_errors(metadata: Mapping[str, str], limits: Limits) -> list[str]:
    """Bounds of the `profile.<field>` metadata overrides; their meaning is applied by services.protocol.profile."""
    errors = []
    bounds = _int_bounds(limits)
    for key, value in metadata.items():
        name = key.removeprefix(profiles.OVERRIDE_PREFIX)
        if name == key or name not in bounds:
            continue
        lo, hi = bounds[name]
        try:
            number = int(value)
        except ValueError:
            continue  # services.protocol.profile says it is not a whole number
        if not lo <= number <= hi:
            errors.append(f"metadata {key}={value} is out of range; allowed {lo}..{hi}")
    return errors


def profile_errors(p: problem_pb2.Problem, limits: Limits) -> list[str]:
    if p.profile and not profiles.NAME_RE.match(p.profile):
        return [f"profile {p.profile[:40]!r} is not a profile name (letters, digits, _ and -, at most 64)"]
    errors = override_errors(p.metadata, limits)
    if errors:
        return errors
    try:
        profiles.resolve(p)
    except profiles.ProfileError as exc:
        errors.append(str(exc))
    return errors


def payload_error(size: int, limits: Limits | None = None) -> str:
    limits = limits or default_limits()
    if size > limits.max_payload_bytes:
        return f"payload of {size} bytes is over the limit of {limits.max_payload_bytes} bytes"
    return ""


def problem_errors(p: problem_pb2.Problem, limits: Limits | None = None) -> list[str]:
    limits = limits or default_limits()
    errors: list[str] = []
    if not p.id:
        errors.append("id is required")
    elif not valid_problem_id(p.id):
        errors.append(f"id {p.id[:40]!r} must be 1-128 characters of A-Z a-z 0-9 _ -")
    if p.kind == problem_pb2.PROBLEM_KIND_UNSPECIFIED:
        errors.append("kind is required (PROBLEM_KIND_MATH, _MULTIPLE_CHOICE, _CODE or _OPEN_ENDED)")
    elif p.kind not in problem_pb2.ProblemKind.values():
        errors.append(f"kind {p.kind} is not a ProblemKind (PROBLEM_KIND_MATH, _MULTIPLE_CHOICE, _CODE or "
                      "_OPEN_ENDED)")
    if not p.text.strip():
        errors.append("text is empty")
    elif len(p.text) > MAX_TEXT_CHARS:
        errors.append(f"text has {len(p.text)} characters; the limit is {MAX_TEXT_CHARS}")
    if p.kind == problem_pb2.PROBLEM_KIND_MULTIPLE_CHOICE and len(p.options) < 2:
        errors.append("a multiple-choice problem needs at least 2 options")
    if p.kind == problem_pb2.PROBLEM_KIND_CODE and p.code.tests and not p.code.entry_point:
        errors.append("code.entry_point is required when code.tests are given")
    errors.extend(limit_errors(p.limits, limits))
    if not errors:  # the profile is looked up only for an otherwise valid problem (its kind picks it)
        errors.extend(profile_errors(p, limits))
    return errors


def limit_errors(lim: problem_pb2.Limits, limits: Limits) -> list[str]:
    errors = []
    if not math.isfinite(lim.deadline_s) or not 0 <= lim.deadline_s <= limits.max_deadline_s:
        errors.append(f"limits.deadline_s={lim.deadline_s} must be a number of seconds in "
                      f"0..{limits.max_deadline_s:.0f} (0 = none)")
    if not 0 <= lim.max_turns <= limits.max_turns:
        errors.append(f"limits.max_turns={lim.max_turns} must be in 0..{limits.max_turns} (0 = the profile's)")
    tokens = lim.max_total_tokens
    if tokens and not limits.min_total_tokens <= tokens <= limits.max_total_tokens:
        errors.append(f"limits.max_total_tokens={tokens} must be in {limits.min_total_tokens}.."
                      f"{limits.max_total_tokens} (0 = the profile's ceiling)")
    return errors
