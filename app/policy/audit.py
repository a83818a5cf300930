"""The audit log: one JSON line per job and per refused request (repeats collapsed into a count)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TextIO

from .. import logs

# A refused request's path (up to 8 KB from gunicorn) is logged up to here.
MAX_LOGGED_TEXT = 256

_logger = logging.getLogger("sse_commander.audit")


def open_private_log(path: str) -> TextIO:
    """Open a log file for appending, created 0600: it says who ran what (the master checks an existing one)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return open(fd, "a", encoding="utf-8")


class AuditLog:
    """Writes audit records to a file, to stderr ("-"), or nowhere ("")."""

    def __init__(self, destination: str, json_lines: bool = False) -> None:
        self.enabled = bool(destination)
        # log_format = "json": each record also has the fields every JSON log line has (app/logs.py).
        self.json_lines = json_lines
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

    def record(self, kind: str, *, request_id: str | None = None, **fields: Any) -> None:
        """Write one record: ``{"audit": kind, "time": ..., **fields}``.

        ``request_id``: of the request it is about, when that is not the one being served (a job's end).
        """
        if not self.enabled:
            return
        now = time.time()
        entry = {"audit": kind, "time": round(now, 3), **fields}
        if self.json_lines:
            entry = {"timestamp": logs.timestamp(now), "level": "info", "logger": "audit",
                     "request_id": request_id or logs.REQUEST_ID.get(), **entry}
            entry.setdefault("user", logs.USER.get())
        _logger.info(json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str))


def capped(text: str | None, limit: int = MAX_LOGGED_TEXT) -> str | None:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more characters)"


@dataclass
class _Window:
    started: float
    held_back: int = 0


class RepeatCollapser:
    """The first record per key in each interval is written; the rest are counted and reported once.

    Pure bookkeeping with an injected clock. At most ``max_keys`` keys are
    tracked: beyond that, records are counted under one key for all the rest.
    """

    OTHERS = ("others",)

    def __init__(self, interval: float, max_keys: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self._windows: dict[Hashable, _Window] = {}
        self._ended: list[tuple[Hashable, int]] = []

    def admit(self, key: Hashable) -> bool:
        """True: write this record in full. False: it was counted, for ``due`` to report."""
        now = self.clock()
        if key not in self._windows and len(self._windows) >= self.max_keys:
            self._drop_ended_windows(now)
            if len(self._windows) >= self.max_keys:
                key = self.OTHERS  # one entry more, at most
        window = self._windows.get(key)
        if window is not None and now - window.started < self.interval:
            window.held_back += 1
            return False
        if window is not None and window.held_back:
            self._ended.append((key, window.held_back))
        self._windows[key] = _Window(now)
        return True

    def due(self) -> list[tuple[Hashable, int]]:
        """(key, count) for each key whose interval has ended with records held back; forgets ended windows."""
        self._drop_ended_windows(self.clock())
        ended, self._ended = self._ended, []
        return ended

    def _drop_ended_windows(self, now: float) -> None:
        for key, window in list(self._windows.items()):
            if now - window.started >= self.interval:
                del self._windows[key]
                if window.held_back:
                    self._ended.append((key, window.held_back))
