"""Problem intake: decodes what users publish on conclave.problems.submit, validates it, and persists it.

Accepted problems go to the PROBLEMS work queue (deduplicated by problem id: a second submission under
an id inside the duplicate window is the first one again). Bad input gets an error Result back on the
publisher's reply subject and a dead-letter entry; it is never stored on conclave.results.<id>, which
belongs to the problem accepted under that id (an invalid payload must not stand in for its result).
A full queue answers `busy`. The service itself never fails on input.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg
from nats.js.errors import APIError
from prometheus_client import Counter

from conclave.v1 import outcome_pb2, problem_pb2
from services.bus import subjects
from services.bus.codec import PayloadError, decode, is_json
from services.bus.error_codes import SubmitError
from services.bus.headers import MSG_ID, REPLY_JSON, REPLY_TO
from services.bus.replies import answer, error_result, publish_event
from services.intake.validate import default_limits, payload_error, problem_errors
from services.runtime import tracing
from services.runtime.lifecycle import Runtime, Service
from services.runtime.logs import problem_id_var
from services.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)


class IntakeSettings(RuntimeSettings):
    pass


# JetStream error codes of a publish the store refuses for good (not an outage).
_TOO_LARGE = 10054  # message size exceeds the stream's maximum
_QUEUE_FULL = 10077  # maximum messages exceeded (PROBLEMS has a limit and discards new)


class IntakeService(Service[IntakeSettings]):
    name = "intake"
    description = "Validates published problems and queues them for the CEO."

    async def setup(self, rt: Runtime[IntakeSettings]) -> None:
        self._rt = rt
        self._limits = default_limits()
        self._count = Counter(
            "conclave_problems_submitted",
            "Problems received on the submit subject, by outcome (accepted, duplicate, rejected, busy, unavailable).",
            ["outcome", "encoding"],
            registry=rt.registry,
        )
        # Queue group: each submission is handled by exactly one intake replica.
        await rt.subscribe(subjects.PROBLEMS_SUBMIT, self._on_submit, queue="conclave-intake")

    async def _on_submit(self, msg: Msg) -> None:
        headers = dict(msg.headers or {})
        # The root of the problem's trace (or a child of the submitter's, when it sent a traceparent).
        with tracing.consuming(self.name, "intake.submit", headers):
            await self._submit(msg, headers)

    async def _submit(self, msg: Msg, headers: dict[str, str]) -> None:
        try:
            as_json = is_json(msg.data, headers)
        except PayloadError:
            as_json = False
        encoding = "json" if as_json else "protobuf"
        too_large = payload_error(len(msg.data), self._limits)
        if too_large:
            await self._reject(msg, "", SubmitError.TOO_LARGE, too_large, as_json, encoding)
            return
        try:
            problem = decode(problem_pb2.Problem, msg.data, headers)
        except PayloadError as exc:
            await self._reject(msg, "", SubmitError.BAD_PAYLOAD, str(exc), as_json, encoding)
            return
        token = problem_id_var.set(problem.id)
        try:
            errors = problem_errors(problem, self._limits)
            if errors:
                await self._reject(msg, problem.id, SubmitError.INVALID_PROBLEM, "; ".join(errors), as_json, encoding)
                return
            out_headers = {MSG_ID: problem.id}
            tracing.inject_headers(out_headers)
            if msg.reply:
                out_headers[REPLY_TO] = msg.reply
            if as_json:
                out_headers[REPLY_JSON] = "1"
            try:
                ack = await self._rt.js.publish(
                    subjects.PROBLEMS_ACCEPTED, problem.SerializeToString(), headers=out_headers
                )
            except APIError as exc:
                if exc.err_code == _QUEUE_FULL:
                    await self._refuse(msg, problem.id, SubmitError.BUSY, "the problem queue is full; retry later", as_json)
                elif exc.err_code == _TOO_LARGE:
                    await self._reject(msg, problem.id, SubmitError.TOO_LARGE, f"the problem queue refused its size: {exc}",
                                       as_json, encoding)
                else:
                    await self._refuse(msg, problem.id, SubmitError.UNAVAILABLE, f"could not queue the problem, retry: {exc}",
                                       as_json)
                return
            except Exception as exc:  # JetStream unavailable: tell the publisher to retry
                await self._refuse(msg, problem.id, SubmitError.UNAVAILABLE, f"could not queue the problem, retry: {exc}",
                                   as_json)
                return
            outcome = "duplicate" if ack.duplicate else "accepted"
            tracing.set_outcome(tracing.current_span(), outcome)
            self._count.labels(outcome, encoding).inc()
            log.info("problem %s", outcome, extra={"kind": problem_pb2.ProblemKind.Name(problem.kind)})
            if not ack.duplicate:
                event = outcome_pb2.ProgressEvent(problem_id=problem.id, type="accepted")
                await publish_event(self._rt.nc, event, as_json=as_json)
        finally:
            problem_id_var.reset(token)

    async def _refuse(self, msg: Msg, problem_id: str, code: str, message: str, as_json: bool) -> None:
        """A good problem not queued now (busy, unavailable): the publisher may retry; no dead letter."""
        log.warning("problem not queued (%s): %s", code, message)
        self._count.labels(code, "any").inc()
        tracing.set_outcome(tracing.current_span(), code, error=True)
        if msg.reply:
            await answer(self._rt.nc, msg.reply, error_result(problem_id, code, message, msg.subject), as_json=as_json)

    async def _reject(self, msg: Msg, problem_id: str, code: str, message: str, as_json: bool, encoding: str) -> None:
        self._count.labels("rejected", encoding).inc()
        tracing.set_outcome(tracing.current_span(), "rejected", error=True, code=code)
        pid = problem_id if subjects.valid_problem_id(problem_id) else ""
        if msg.reply:
            await answer(self._rt.nc, msg.reply, error_result(pid, code, message, msg.subject), as_json=as_json)
        await self._rt.letters.record(
            stream="", subject=msg.subject, payload=msg.data, headers=msg.headers, code=code,
            message=message, problem_id=pid,
        )


def build(settings: IntakeSettings | None = None) -> IntakeService:
    return IntakeService(settings or IntakeSettings())
