"""Running the sse-commander client as a subprocess, and a TCP proxy that cuts its connections mid-stream."""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Sequence

from .server import VENV_BIN, GunicornServer

CLIENT = str(VENV_BIN / "sse-commander")


def client_env(server: GunicornServer | str | None, **extra: str) -> dict[str, str]:
    """A clean environment for the client, pointed at ``server`` (or a URL)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    if server is not None:
        env["SSECMD_URL"] = server if isinstance(server, str) else server.base_url
    env.update(extra)
    return env


def no_traceback(stderr: bytes) -> None:
    """The client's promise: whatever happened, no Python traceback reaches the user (nor a bug of ours)."""
    assert b"Traceback" not in stderr and b"unexpected error" not in stderr, stderr.decode(errors="replace")


def client(server: GunicornServer | str | None, *args: str, stdin: bytes | None = None, timeout: float = 60,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the client to its end; stdout and stderr as bytes, never with a traceback."""
    result = subprocess.run(
        [CLIENT, *args], input=stdin, capture_output=True, timeout=timeout,
        env=env if env is not None else client_env(server),
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    no_traceback(result.stderr)
    return result


def _default_sigint() -> None:
    # A child of a shell script's background job starts with SIGINT ignored; these tests send it on purpose.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_client(server: GunicornServer | str | None, *args: str, env: dict[str, str] | None = None,
                 **popen: object) -> subprocess.Popen:
    """Start the client in its own session, with default SIGINT handling, its streams piped."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "stdin": subprocess.DEVNULL, **popen}
    return subprocess.Popen(
        [CLIENT, *args], env=env if env is not None else client_env(server), start_new_session=True,
        preexec_fn=_default_sigint, **options,
    )


def read_until(stream, marker: bytes, limit: int = 1 << 20, timeout: float = 30) -> bytes:
    """Read a pipe (or a pty) until ``marker`` has arrived, or EOF; everything read so far."""
    fd = stream if isinstance(stream, int) else stream.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while marker not in seen and len(seen) < limit:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"nothing more after {timeout} s; so far: {seen[-2000:]!r}"
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: a pty whose other side has closed
            break
        if not chunk:
            break
        seen += chunk
    return seen


def canned_answer(status: int, reason: str, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A complete HTTP/1.1 answer, as a proxy in front of the server might give."""
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}",
             "Connection: close", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class CuttingProxy:
    """A TCP proxy to a server that cuts connection number i after ``cuts[i]`` bytes of the server's answer.

    Cuts alternate between a reset (RST: the client's read fails) and a plain close in the middle of the
    chunked body (FIN: the body ends early). ``canned`` answers chosen connections (by number) itself,
    without reaching the server (a 503 from a proxy whose upstream is restarting); ``cuts`` count only the
    connections that reach the server. Connections beyond both pass through.
    """

    def __init__(self, target_port: int, cuts: Sequence[int] = (), canned: dict[int, bytes] | None = None,
                 max_connections: int | None = None) -> None:
        self.target_port = target_port
        self.max_connections = max_connections  # then it stops listening: later connections are refused
        self.cuts = list(cuts)
        self.canned = dict(canned or {})
        self.connections = 0
        self.cut = 0
        self._proxied = 0
        self.requests: list[bytes] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._closing:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                number = self.connections
                self.connections += 1
            if self.max_connections is not None and self.connections >= self.max_connections:
                self._listener.close()
            thread = threading.Thread(target=self._serve, args=(number, downstream), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, number: int, downstream: socket.socket) -> None:
        with downstream:
            request = self._read_request(downstream)
            self.requests.append(request)
            if number in self.canned:
                downstream.sendall(self.canned[number])
                return
            with self._lock:
                index = self._proxied
                self._proxied += 1
            limit = self.cuts[index] if index < len(self.cuts) else None
            with socket.create_connection(("127.0.0.1", self.target_port)) as upstream:
                upstream.sendall(request)
                self._pump(downstream, upstream, limit)

    @staticmethod
    def _read_request(downstream: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = downstream.recv(65536)
            if not chunk:
                break
            data += chunk
        return data

    def _pump(self, downstream: socket.socket, upstream: socket.socket, limit: int | None) -> None:
        sent = 0
        with selectors.DefaultSelector() as selector:
            selector.register(downstream, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            while not self._closing:
                for key, _ in selector.select(timeout=0.5):
                    source = key.fileobj
                    try:
                        data = source.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    if source is downstream:
                        upstream.sendall(data)
                        continue
                    if limit is not None and sent + len(data) >= limit:
                        with contextlib.suppress(OSError):
                            downstream.sendall(data[: limit - sent])
                        self._cut(downstream)
                        return
                    sent += len(data)
                    try:
                        downstream.sendall(data)
                    except OSError:
                        return

    def _cut(self, downstream: socket.socket) -> None:
        with self._lock:
            self.cut += 1
            reset = self.cut % 2 == 1
        if reset:
            downstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            with contextlib.suppress(OSError):
                downstream.shutdown(socket.SHUT_RDWR)
