"""Answering a publisher: in the encoding it used, on its reply subject and on the result subject."""

from __future__ import annotations

import logging

from google.protobuf import json_format
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.js import JetStreamContext

from conclave.v1 import outcome_pb2
from services.bus import subjects
from services.bus.headers import CONTENT_TYPE, JSON, MSG_ID, PROTOBUF

log = logging.getLogger(__name__)


def encode(msg: Message, as_json: bool) -> tuple[bytes, dict[str, str]]:
    if as_json:
        body = json_format.MessageToJson(msg, preserving_proto_field_name=False, indent=None)
        return body.encode(), {CONTENT_TYPE: JSON}
    return msg.SerializeToString(), {CONTENT_TYPE: PROTOBUF}


async def publish_result(
    nc: Client,
    js: JetStreamContext,
    result: outcome_pb2.Result,
    *,
    reply_to: str = "",
    as_json: bool = False,
    msg_id: str = "",
) -> None:
    """Persists the result on conclave.results.<id> (deduplicated by `msg_id`) and answers `reply_to`."""
    if result.problem_id and subjects.valid_problem_id(result.problem_id):
        body, headers = encode(result, as_json=False)
        headers[MSG_ID] = msg_id or f"result:{result.problem_id}"
        await js.publish(subjects.result(result.problem_id), body, headers=headers)
    if reply_to and not subjects.is_inbox(reply_to):
        # The submitter chose this subject; answering anything but an inbox would let it make the CEO publish
        # wherever the CEO may (a result of another problem, a task), whatever its own permissions.
        log.warning("not answering reply subject %r: not an inbox", reply_to)
    elif reply_to:
        body, headers = encode(result, as_json)
        await nc.publish(reply_to, body, headers=headers)


def error_result(problem_id: str, code: str, message: str, subject: str) -> outcome_pb2.Result:
    return outcome_pb2.Result(
        problem_id=problem_id,
        status="error",
        stop_reason="error",
        correct=-1,
        error=outcome_pb2.Error(code=code, message=message, subject=subject, problem_id=problem_id),
    )
