"""Reading SSE from the real server in tests: streaming, with the spec parser."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from .sse_parser import EventStreamParser, MessageEvent


@contextmanager
def open_stream(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Iterator[httpx.Response]:
    """An open streaming GET."""
    with (
        httpx.Client(timeout=httpx.Timeout(timeout, connect=5)) as client,
        client.stream("GET", url, headers=headers or {}) as response,
    ):
        yield response


def iter_events(response: httpx.Response, parser: EventStreamParser | None = None) -> Iterator[MessageEvent]:
    """Events as they arrive on an open response."""
    parser = parser or EventStreamParser()
    for chunk in response.iter_raw():
        yield from parser.feed(chunk)


def collect(
    url: str, headers: dict[str, str] | None = None, until: str = "exit", timeout: float = 30
) -> list[MessageEvent]:
    """Every event of a stream up to and including the first of type ``until`` (or the end)."""
    events = []
    deadline = time.monotonic() + timeout
    with open_stream(url, headers, timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in iter_events(response):
            events.append(event)
            if event.type == until or time.monotonic() > deadline:
                break
    return events


def read_slowly(
    url: str, *, every: int, pause: float, until: bytes, headers: dict[str, str] | None = None, timeout: float = 60,
) -> list[MessageEvent]:
    """The events a slow reader gets: it sleeps ``pause`` seconds after each ``every`` bytes, and stops after the
    frame holding ``until`` (``b"event: run_exit"``, say) or at the end of the response."""
    body, unread = bytearray(), 0
    with open_stream(url, headers=headers, timeout=timeout) as response:
        for chunk in response.iter_raw():
            body += chunk
            unread += len(chunk)
            if unread > every:
                time.sleep(pause)
                unread = 0
            if until in body[-65536:] and body.endswith(b"\n\n"):
                break
    return EventStreamParser().feed(bytes(body))


def output_of(events: list[MessageEvent], stream: str | None = None) -> str:
    """Concatenated ``out`` text of the stdout/stderr events (or only one stream)."""
    kinds = (stream,) if stream else ("stdout", "stderr")
    return "".join(json.loads(e.data)["out"] for e in events if e.type in kinds)


def payload(event: MessageEvent) -> dict:
    """An event's JSON data."""
    return json.loads(event.data)
