"""Problem intake: decodes what users publish on conclave.problems.submit, validates it, and persists it.

Accepted problems go to the PROBLEMS work queue (deduplicated by problem id). Bad input gets an error
Result back on the publisher's reply subject and on conclave.results.<id> when the id is readable, plus
a dead-letter entry. The service itself never fails on input.
"""

from __future__ import annotations

import hashlib
import logging

from nats.aio.msg import Msg
from prometheus_client import Counter

from conclave.v1 import outcome_pb2, problem_pb2
from services.bus import subjects
from services.bus.codec import PayloadError, decode, is_json
from services.bus.headers import MSG_ID, REPLY_TO, TRACEPARENT
from services.bus.replies import encode, error_result, publish_event, publish_result
from services.intake.validate import problem_errors
from services.runtime.lifecycle import Runtime, Service
from services.runtime.logs import problem_id_var
from services.runtime.settings import RuntimeSettings
from services.runtime.tracing import child_traceparent

log = logging.getLogger(__name__)


class IntakeSettings(RuntimeSettings):
    pass


class IntakeService(Service[IntakeSettings]):
    name = "intake"
    description = "Validates published problems and queues them for the CEO."

    async def setup(self, rt: Runtime[IntakeSettings]) -> None:
        self._rt = rt
        self._count = Counter(
            "conclave_problems_submitted",
            "Problems received on the submit subject, by outcome (accepted, duplicate, rejected).",
            ["outcome", "encoding"],
            registry=rt.registry,
        )
        # Queue group: each submission is handled by exactly one intake replica.
        await rt.subscribe(subjects.PROBLEMS_SUBMIT, self._on_submit, queue="conclave-intake")

    async def _on_submit(self, msg: Msg) -> None:
        headers = dict(msg.headers or {})
        try:
            as_json = is_json(msg.data, headers)
        except PayloadError:
            as_json = False
        encoding = "json" if as_json else "protobuf"
        try:
            problem = decode(problem_pb2.Problem, msg.data, headers)
        except PayloadError as exc:
            await self._reject(msg, "", "bad_payload", str(exc), as_json, encoding)
            return
        token = problem_id_var.set(problem.id)
        try:
            errors = problem_errors(problem)
            if errors:
                await self._reject(msg, problem.id, "invalid_problem", "; ".join(errors), as_json, encoding)
                return
            out_headers = {MSG_ID: problem.id, TRACEPARENT: child_traceparent(headers.get(TRACEPARENT))}
            if msg.reply:
                out_headers[REPLY_TO] = msg.reply
            if as_json:
                out_headers["Conclave-Reply-Json"] = "1"
            try:
                ack = await self._rt.js.publish(
                    subjects.PROBLEMS_ACCEPTED, problem.SerializeToString(), headers=out_headers
                )
            except Exception as exc:  # JetStream unavailable: tell the publisher to retry
                log.error("could not persist problem: %s", exc)
                if msg.reply:
                    res = error_result(problem.id, "unavailable", f"could not queue the problem, retry: {exc}", msg.subject)
                    body, hdrs = encode(res, as_json)
                    await self._rt.nc.publish(msg.reply, body, headers=hdrs)
                return
            outcome = "duplicate" if ack.duplicate else "accepted"
            self._count.labels(outcome, encoding).inc()
            log.info("problem %s", outcome, extra={"kind": problem_pb2.ProblemKind.Name(problem.kind)})
            if not ack.duplicate:
                event = outcome_pb2.ProgressEvent(problem_id=problem.id, type="accepted")
                await publish_event(self._rt.nc, event, as_json=as_json)
        finally:
            problem_id_var.reset(token)

    async def _reject(self, msg: Msg, problem_id: str, code: str, message: str, as_json: bool, encoding: str) -> None:
        self._count.labels("rejected", encoding).inc()
        pid = problem_id if subjects.valid_problem_id(problem_id) else ""
        result = error_result(pid, code, message, msg.subject)
        digest = hashlib.sha256(msg.data).hexdigest()[:16]
        await publish_result(
            self._rt.nc, self._rt.js, result, reply_to=msg.reply or "", as_json=as_json,
            msg_id=f"result-error:{pid}:{digest}",
        )
        await self._rt.letters.record(
            stream="", subject=msg.subject, payload=msg.data, headers=msg.headers, code=code,
            message=message, problem_id=pid,
        )


def build(settings: IntakeSettings | None = None) -> IntakeService:
    return IntakeService(settings or IntakeSettings())
