"""A deadline on request bodies: a client that sends headers and then too little gets 408, not a held slot.

gunicorn bounds the wait for request headers (its keep-alive timeout, also
on a connection's first request) and for draining a body the app did not
read, but not a read the app makes: ``POST /login`` with ``Content-Length:
100`` and no body used to hold its connection, and a pool slot, forever.
Here every read of ``wsgi.input`` shares one deadline, ``body_timeout``
seconds after the request arrived, so trickling a byte now and then does not
extend it. The timeout is raised inside gunicorn's read, which marks the
body as failed: gunicorn then closes the connection after the 408 answer
instead of trying to read the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
from werkzeug.exceptions import RequestTimeout


class BodyTimeout(RequestTimeout):
    """408: the body did not arrive in time (answered as JSON by the app's error handlers)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body did not arrive within {seconds:g} s")


class DeadlineInput:
    """``wsgi.input`` whose reads all end by one deadline."""

    __slots__ = ("_deadline", "_input", "_seconds")

    def __init__(self, stream: Any, seconds: float, now: float | None = None) -> None:
        self._input = stream
        self._seconds = seconds
        self._deadline = (time.monotonic() if now is None else now) + seconds

    def _within_deadline(self, method: Callable[..., Any], *args: Any) -> Any:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise BodyTimeout(self._seconds)
        with gevent.Timeout(remaining, BodyTimeout(self._seconds)):
            return method(*args)

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (all, if negative or None) before the deadline."""
        return self._within_deadline(self._input.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line before the deadline."""
        return self._within_deadline(self._input.readline, size)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Read lines before the deadline."""
        return self._within_deadline(self._input.readlines, hint)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def has_body(environ: dict[str, Any]) -> bool:
    """Whether the request announces a body (a non-zero Content-Length, or any Transfer-Encoding)."""
    length = environ.get("CONTENT_LENGTH")
    return bool(length and length != "0") or "HTTP_TRANSFER_ENCODING" in environ


class BodyDeadline:
    """WSGI middleware: put a deadline on reading the body of every request that has one."""

    def __init__(self, app: Callable[..., Iterable[bytes]], seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Wrap ``wsgi.input`` (requests without a body pass untouched), then call the app."""
        if has_body(environ):
            environ["wsgi.input"] = DeadlineInput(environ["wsgi.input"], self.seconds)
        return self.app(environ, start_response)
