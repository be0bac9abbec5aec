"""The codes of a submission's error Result (`outcome_pb2.Error.code`) that a publisher acts on: rejected for
good (fix the problem), or not queued now (send it again later). Intake answers them; the client, the OpenAI
door and the eval runner read them."""

from __future__ import annotations

from enum import StrEnum


class SubmitError(StrEnum):
    BAD_PAYLOAD = "bad_payload"  # not a Problem at all: dead-lettered
    INVALID_PROBLEM = "invalid_problem"  # a Problem that breaks a rule (no text, a bad id): dead-lettered
    TOO_LARGE = "too_large"  # over a size limit: dead-lettered
    BUSY = "busy"  # the problem queue is full (BusTiming.problem_queue_limit)
    UNAVAILABLE = "unavailable"  # JetStream did not take it, or did not say so in time


REJECTED = frozenset({SubmitError.BAD_PAYLOAD, SubmitError.INVALID_PROBLEM, SubmitError.TOO_LARGE})
# Not queued now, nothing wrong with the problem. UNAVAILABLE includes a publish whose PubAck timed out and
# which JetStream stored all the same: sent again under the same id, it is deduplicated, and the result of
# the run it started still comes.
RETRY_LATER = frozenset({SubmitError.BUSY, SubmitError.UNAVAILABLE})
