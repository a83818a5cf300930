"""gunicorn's logger class for ``log_format = "json"``: the access log and the error log as JSON lines.

The access log has one line per request, written when its answer has been
sent: for a stream, when the stream ends, with how much it sent and how it
ended. The error log (the app's log shares its handlers) uses
logs.JsonFormatter. Imported by the master: no gevent, no Flask.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.glogging import Logger

from app.logs import REQUEST_ID_ENV, STREAM_ENV, USER_ENV, JsonFormatter, dumps, timestamp


class JsonLogger(Logger):
    """gunicorn's logger with JSON lines: the error log (and the app's log) and the access log."""

    def setup(self, cfg) -> None:
        """gunicorn's own setup, then every handler it made writes JSON (the access lines are JSON already)."""
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())
        for handler in self.access_log.handlers:
            handler.setFormatter(logging.Formatter("%(message)s"))

    def access(self, resp, req, environ, request_time) -> None:
        """One line per request, when its answer has been sent (a stream's: when it ends, and how)."""
        if not self.access_log_enabled:
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = resp.sent or 0
        entry: dict[str, Any] = {
            "timestamp": timestamp(),
            "level": "info",
            "logger": "access",
            "request_id": environ.get(REQUEST_ID_ENV),
            "user": environ.get(USER_ENV),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING") or None,
            "status": int(status) if str(status).isdigit() else status,
            "bytes": sent,
            "duration": round(request_time.total_seconds(), 6),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
        }
        stream = environ.get(STREAM_ENV)
        if stream is not None:
            entry["bytes"] = sent + stream.direct_bytes  # direct delivery writes past gunicorn's count
            entry["stream"] = {"kind": stream.kind, "ended": stream.end or "client_left"}
        try:
            self.access_log.info(dumps(entry))
        except Exception:
            self.error("Failed to format the access log line")
