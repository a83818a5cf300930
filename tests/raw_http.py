"""Send exact request bytes over a socket, for requests that httpx refuses to build (raw non-UTF-8, bad framing)."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass


@dataclass
class RawResponse:
    """A parsed HTTP/1.1 response: status, lower-cased headers and the body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(port: int, data: bytes, timeout: float = 5) -> RawResponse:
    """Write ``data`` to 127.0.0.1:``port`` and read one response until the server closes the connection.

    The request should carry ``Connection: close``. A reset after the response
    (the server refusing an oversized body it did not read) keeps what arrived.
    """
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # The server may answer early and close (an oversized body); its answer can still be read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError(f"no complete HTTP response: {received[:300]!r}")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return RawResponse(status, headers, body)


def request_bytes(method: str, target: bytes, headers: dict[str, bytes] | None = None, body: bytes = b"") -> bytes:
    """An HTTP/1.1 request with ``Connection: close``; ``target`` and header values are sent as given."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in (headers or {}).items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
