"""Many raw streaming connections at once, for the capacity tests: open, wait for the first bytes, close."""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import time
from dataclasses import dataclass, field

import pytest


def raise_own_nofile(needed: int) -> None:
    """Let this test process hold ``needed`` descriptors (soft limit up to the hard one), or skip the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else hard, hard))


@dataclass
class OpenStream:
    """One connection: what it sent, what has arrived, and whether the server has closed it."""

    sock: socket.socket
    received: bytes = b""
    closed: bool = False

    @property
    def status(self) -> int | None:
        """The response's status code once the status line has arrived."""
        line, sep, _ = self.received.partition(b"\r\n")
        if not sep:
            return None
        return int(line.split()[1])

    @property
    def head_and_body(self) -> tuple[bytes, bytes]:
        head, _, body = self.received.partition(b"\r\n\r\n")
        return head, body


@dataclass
class StreamCrowd:
    """Connections to one server, driven by one selector."""

    port: int
    streams: list[OpenStream] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def open(self, path: str, count: int, headers: dict[str, str] | None = None) -> list[OpenStream]:
        """Open ``count`` connections each sending ``GET path`` (HTTP/1.1); returns them."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{extra}\r\n".encode()
        opened = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.sendall(request)
            sock.setblocking(False)
            stream = OpenStream(sock)
            self._selector.register(sock, selectors.EVENT_READ, stream)
            opened.append(stream)
        self.streams += opened
        return opened

    def pump(self, seconds: float) -> None:
        """Read whatever arrives for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in self._selector.select(timeout=min(left, 0.2)):
                self._read(key.data)

    def wait_for(self, streams: list[OpenStream], predicate, timeout: float) -> bool:
        """Read until ``predicate(stream)`` holds for every one of ``streams``, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not all(predicate(s) for s in streams):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _ in self._selector.select(timeout=min(left, 0.2)):
                self._read(key.data)
        return True

    def _read(self, stream: OpenStream) -> None:
        try:
            data = stream.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            stream.received += data
        else:
            stream.closed = True
            self._selector.unregister(stream.sock)

    def close(self, streams: list[OpenStream] | None = None) -> None:
        """Close some (default: all) connections."""
        for stream in list(streams if streams is not None else self.streams):
            if not stream.closed:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(stream.sock)
            stream.sock.close()
            stream.closed = True
            self.streams.remove(stream)

    def __enter__(self) -> StreamCrowd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._selector.close()


def connected(stream: OpenStream) -> bool:
    """The stream's first frame (``: connected``) has arrived."""
    return b": connected" in stream.received


def answered(stream: OpenStream) -> bool:
    """A whole refusal has arrived (the server closed the connection after it)."""
    return stream.closed and stream.status is not None
