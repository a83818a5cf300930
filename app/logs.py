"""Structured logs (``log_format = "json"``): one JSON object per line, and the request id that ties them together.

- ``JsonFormatter`` writes a log record as JSON (gunicorn's logger class in
  JSON mode, server/jsonlog.py, puts it on the error log, which the app's own
  log shares, and writes the access log's lines).
- ``REQUEST_ID`` and ``USER`` hold the current request's id and user in the
  greenlet serving it (each greenlet has its own context), so any line logged
  while serving a request carries them; the audit log adds them too.
- ``request_id`` keeps an ``X-Request-ID`` that a trusted proxy sent, else makes
  one.

Pure: the standard library only (gunicorn's master imports it too).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
USER: ContextVar[str | None] = ContextVar("user", default=None)
# The WSGI environ's keys the access log reads (it runs after the app, outside its context).
REQUEST_ID_ENV = "ssecmd.request_id"
USER_ENV = "ssecmd.user"
STREAM_ENV = "ssecmd.stream"
# What a proxy's id may be: short, printable, no quotes or spaces (it goes into headers and logs as is).
_VALID_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id(offered: str | None, from_trusted_proxy: bool) -> str:
    """The id of a request: the ``X-Request-ID`` a trusted proxy sent (if well-formed), else a new one."""
    if offered is not None and from_trusted_proxy and _VALID_ID.fullmatch(offered):
        return offered
    return secrets.token_hex(16)


def timestamp(seconds: float | None = None) -> str:
    """UTC, ISO 8601 with milliseconds."""
    return datetime.fromtimestamp(time.time() if seconds is None else seconds, UTC).isoformat(timespec="milliseconds")


def dumps(entry: dict[str, Any]) -> str:
    """One log line: compact JSON, non-ASCII kept, anything odd as text."""
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str)


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: timestamp, level, logger, message, and the request's id and user."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": REQUEST_ID.get(),
            "user": USER.get(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return dumps(entry)
