"""JSON logs that carry the problem id of the work being done."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from services.runtime import tracing

problem_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("problem_id", default="")

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        pid = getattr(record, "problem_id", "") or problem_id_var.get()
        if pid:
            doc["problem_id"] = pid
        tid = tracing.trace_id_of()
        if tid:
            doc["trace_id"] = tid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in doc and not key.startswith("_"):
                doc[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        pid = getattr(record, "problem_id", "") or problem_id_var.get()
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        tail = f" [{pid}]" if pid else ""
        text = f"{stamp} {record.levelname[0]} {record.name}{tail}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # nats-py logs every reconnect attempt at ERROR; our connection callbacks say it better.
    logging.getLogger("nats.aio.client").setLevel(logging.CRITICAL)
    # One line per HTTP request (health checks every few seconds) drowns everything else.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
