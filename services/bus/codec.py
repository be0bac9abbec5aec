"""Wire decoding: binary protobuf or protobuf JSON, picked by Content-Type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from services.bus.headers import CONTENT_TYPE, JSON, PROTOBUF_TYPES

M = TypeVar("M", bound=Message)


class PayloadError(ValueError):
    """The payload is not a valid message of the expected type; the text says why."""


def is_json(payload: bytes, headers: Mapping[str, str] | None) -> bool:
    ctype = (headers or {}).get(CONTENT_TYPE, "").split(";")[0].strip().lower()
    if ctype:
        if ctype == JSON or ctype.endswith("+json"):
            return True
        if ctype in PROTOBUF_TYPES:
            return False
        raise PayloadError(f"unsupported Content-Type {ctype!r}; use {JSON} or application/protobuf")
    return payload.lstrip()[:1] == b"{"


def decode(cls: type[M], payload: bytes, headers: Mapping[str, str] | None = None) -> M:
    msg = cls()
    if not payload:
        raise PayloadError(f"empty payload; expected a {cls.DESCRIPTOR.full_name}")
    if is_json(payload, headers):
        try:
            json_format.Parse(payload.decode("utf-8"), msg)
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            raise PayloadError(f"invalid {cls.DESCRIPTOR.full_name} JSON: {exc}") from exc
        return msg
    try:
        msg.ParseFromString(payload)
    except DecodeError as exc:
        raise PayloadError(f"invalid {cls.DESCRIPTOR.full_name} protobuf: {exc}") from exc
    return msg


def to_json(msg: Message) -> str:
    return json_format.MessageToJson(msg, preserving_proto_field_name=True, indent=None)
