"""JSON log lines with the ids that matter (tenant, action, deployment, job)."""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime

CONTEXT_FIELDS = ("request_id", "tenant_id", "action_id", "deployment_id", "job_id", "connection_id", "platform")


# The id of the request being served (set by budgetradar.middleware.RequestIdMiddleware).
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class RequestIdLogFilter(logging.Filter):
    """Adds ``request_id`` to every log record made while a request is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                payload[name] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
