"""Header names used on the bus."""

MSG_ID = "Nats-Msg-Id"
CONTENT_TYPE = "Content-Type"
# The subject a problem's publisher asked the result to be sent to (the core-NATS reply subject).
REPLY_TO = "Conclave-Reply-To"
# "1": the publisher asked for its result (and events) as JSON; intake passes it on to the CEO.
REPLY_JSON = "Conclave-Reply-Json"
PROBLEM_ID = "Conclave-Problem-Id"
ERROR_CODE = "Conclave-Error"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

PROTOBUF = "application/protobuf"
JSON = "application/json"
PROTOBUF_TYPES = ("application/protobuf", "application/x-protobuf", "application/octet-stream")
