"""The audit log: one JSON line per job and per refused request."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

_logger = logging.getLogger("sse_commander.audit")


def open_private_log(path: str) -> TextIO:
    """Open a log file for appending, created 0600: it says who ran what (the master checks an existing one)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return open(fd, "a", encoding="utf-8")


class AuditLog:
    """Writes audit records to a file, to stderr ("-"), or nowhere ("")."""

    def __init__(self, destination: str) -> None:
        self.enabled = bool(destination)
        if not self.enabled or _logger.handlers:
            return
        handler: logging.Handler
        if destination == "-":
            handler = logging.StreamHandler(sys.stderr)
        else:
            handler = logging.StreamHandler(open_private_log(destination))
        handler.setFormatter(logging.Formatter("%(message)s"))
        _logger.addHandler(handler)
        _logger.setLevel(logging.INFO)
        _logger.propagate = False

    def record(self, kind: str, **fields: Any) -> None:
        """Write one record: ``{"audit": kind, "time": ..., **fields}``."""
        if not self.enabled:
            return
        entry = {"audit": kind, "time": round(time.time(), 3), **fields}
        _logger.info(json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str))
