"""Answering a publisher: in the encoding it used, on its reply subject, the result subject and events.

Every message carries a Content-Type header. JSON is protobuf JSON (camelCase keys) that keeps fields at
their zero value (`"correct": 0`, `"consensus": false`), so a JSON reader never has to guess a default.
"""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.js import JetStreamContext

from conclave.v1 import outcome_pb2
from services.bus import subjects
from services.bus.headers import CONTENT_TYPE, JSON, MSG_ID, PROTOBUF


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


async def publish_result(
    nc: Client,
    js: JetStreamContext,
    result: outcome_pb2.Result,
    *,
    reply_to: str = "",
    as_json: bool = False,
    msg_id: str = "",
) -> None:
    """Persists the result on conclave.results.<id> (deduplicated by `msg_id`) and answers `reply_to`.

    Both copies use the submitter's encoding; readers of the stream decode by Content-Type (codec.decode).
    """
    if result.problem_id and subjects.valid_problem_id(result.problem_id):
        body, headers = encode(result, as_json)
        headers[MSG_ID] = msg_id or f"result:{result.problem_id}"
        await js.publish(subjects.result(result.problem_id), body, headers=headers)
    if reply_to:
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
