"""Every NATS subject Conclave uses. Nothing else in the code base spells a subject."""

from __future__ import annotations

import re

PREFIX = "conclave"

# Users publish problems here (core NATS; the intake validates and persists them).
PROBLEMS_SUBMIT = f"{PREFIX}.problems.submit"
# Validated problems, persisted in the PROBLEMS work queue (consumed by the CEO).
PROBLEMS_ACCEPTED = f"{PREFIX}.problems.accepted"
# Role work queues: conclave.tasks.<role>.
TASKS_PREFIX = f"{PREFIX}.tasks"
# Role replies: conclave.replies.<problem_id>.<role>.<step key>. The role token lets NATS permissions bind
# each role to its own replies (services/bus/permissions.py).
REPLIES_PREFIX = f"{PREFIX}.replies"
RESULTS_PREFIX = f"{PREFIX}.results"
EVENTS_PREFIX = f"{PREFIX}.events"
TRAJECTORIES_PREFIX = f"{PREFIX}.trajectories"
DEADLETTER_PREFIX = f"{PREFIX}.deadletter"
# Reply inboxes. Each NATS user gets its own prefix below this one (services/bus/permissions.py).
INBOX_PREFIX = "_INBOX"
# Micro-service discovery (nats micro protocol).
SERVICE_PREFIX = "$SRV"

# JetStream advisory fired when a message exhausts MaxDeliver.
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def valid_problem_id(problem_id: str) -> bool:
    """Ids become subject tokens, so they must not contain '.', '*', '>' or spaces."""
    return bool(_ID_RE.match(problem_id))


def is_inbox(subject: str) -> bool:
    """A reply subject a client may legitimately ask for; anything else is not answered."""
    return subject.startswith(INBOX_PREFIX + ".")


def work(service: str) -> str:
    """The micro endpoint on which a service answers what work it did (services/runtime/lifecycle.py)."""
    return f"{PREFIX}.work.{service}"


def task(role: str) -> str:
    return f"{TASKS_PREFIX}.{role}"


def step_role(step: str) -> str:
    """'t1-r0-critic-0' -> 'critic': the role of a step key (ceo/steps.py: t<turn>-r<round>-<role>-<index>)."""
    parts = step.split("-")
    return parts[2] if len(parts) == 4 and parts[2] else "unknown"


def reply(problem_id: str, step: str) -> str:
    return f"{REPLIES_PREFIX}.{problem_id}.{step_role(step)}.{step}"


def reply_is_genuine(subject: str, problem_id: str, step: str) -> bool:
    """A reply counts for `step` only on that step's subject: only the step's role may publish there, so a
    payload that claims another role's step (a compromised worker) is not believed."""
    return subject == reply(problem_id, step)


def replies_of(problem_id: str) -> str:
    return f"{REPLIES_PREFIX}.{problem_id}.>"


def result(problem_id: str) -> str:
    return f"{RESULTS_PREFIX}.{problem_id}"


def event(problem_id: str) -> str:
    return f"{EVENTS_PREFIX}.{problem_id}"


def trajectory(problem_id: str) -> str:
    return f"{TRAJECTORIES_PREFIX}.{problem_id}"


def deadletter(source_stream: str) -> str:
    return f"{DEADLETTER_PREFIX}.{source_stream.lower()}"


def max_deliveries_advisory(stream: str = "*", consumer: str = "*") -> str:
    return f"{MAX_DELIVERIES_ADVISORY}.{stream}.{consumer}"
