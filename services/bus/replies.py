"""Answering a publisher: in the encoding it used, on its reply subject, the result subject and events.

Every message carries a Content-Type header. JSON is protobuf JSON (camelCase keys) that keeps fields at
their zero value (`"correct": 0`, `"consensus": false`), so a JSON reader never has to guess a default.
Every copy of a problem's result carries the same idempotency key in its Nats-Msg-Id header,
`result:<problem id>` (RESULT_KEY): JetStream stores one result per key, and a live subscriber that
sees a key twice (a CEO retried a publish whose acknowledgement a NATS restart lost) keeps the first.
"""

from __future__ import annotations

import logging

from google.protobuf import json_format
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.js import JetStreamContext

from conclave.v1 import outcome_pb2
from services.bus import subjects
from services.bus.headers import CONTENT_TYPE, JSON, MSG_ID, PROTOBUF

RESULT_KEY = "result:{problem_id}"

log = logging.getLogger(__name__)


def encode(msg: Message, as_json: bool) -> tuple[bytes, dict[str, str]]:
    if as_json:
        body = json_format.MessageToJson(msg, preserving_proto_field_name=False, indent=None,
                                         always_print_fields_with_no_presence=True)
        return body.encode(), {CONTENT_TYPE: JSON}
    return msg.SerializeToString(), {CONTENT_TYPE: PROTOBUF}


async def publish_event(nc: Client, event: outcome_pb2.ProgressEvent, *, as_json: bool = False) -> None:
    """A progress event on conclave.events.<id> (core NATS, live only), in the submitter's encoding."""
    body, headers = encode(event, as_json)
    await nc.publish(subjects.event(event.problem_id), body, headers=headers)


async def store_result(js: JetStreamContext, result: outcome_pb2.Result, *, as_json: bool = False) -> None:
    """Persists a problem's result on conclave.results.<id>, deduplicated by its key, in the submitter's
    encoding: readers of the stream decode by Content-Type (codec.decode)."""
    body, headers = encode(result, as_json)
    headers[MSG_ID] = RESULT_KEY.format(problem_id=result.problem_id)
    await js.publish(subjects.result(result.problem_id), body, headers=headers)


async def answer(nc: Client, reply_to: str, result: outcome_pb2.Result, *, as_json: bool = False,
                 keyed: bool = False) -> None:
    """Sends a result to the publisher's reply subject (core NATS). `keyed`: it is the outcome of the
    problem accepted under its id, and carries that result's key (a rejection or `busy` does not)."""
    if not subjects.is_inbox(reply_to):
        # The submitter chose this subject; answering anything but an inbox would let it make the CEO publish
        # wherever the CEO may (a result of another problem, a task), whatever its own permissions.
        log.warning("not answering reply subject %r: not an inbox", reply_to)
        return
    body, headers = encode(result, as_json)
    if keyed:
        headers[MSG_ID] = RESULT_KEY.format(problem_id=result.problem_id)
    await nc.publish(reply_to, body, headers=headers)


def error_result(problem_id: str, code: str, message: str, subject: str) -> outcome_pb2.Result:
    return outcome_pb2.Result(
        problem_id=problem_id,
        status="error",
        stop_reason="error",
        correct=-1,
        error=outcome_pb2.Error(code=code, message=message, subject=subject, problem_id=problem_id),
    )
