"""The minimal SSE relay: a floor for what the full server could do in Python with gevent.

``python -m bench.sse_relay CMD [ARGS...]`` listens on a free loopback port
(printed on stdout), answers one HTTP request by running CMD and relaying its
stdout as SSE: read what the pipe holds (up to 256 KiB), decode UTF-8, frame
as ``{"type": "stdout", "out": ...}`` JSON with the server's event ids, and
send it chunked. No Flask, no gunicorn, no event log, no flow control, no
limits: single-purpose, for comparison only.
"""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys

import gevent.socket
from gevent.socket import wait_read

READ = 65536
COALESCE = 262144
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
)


def frame(kind: str, payload: dict, event_id: int) -> bytes:
    """One SSE event, as one HTTP chunk."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    body = b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, kind.encode(), data)
    return b"%x\r\n%s\r\n" % (len(body), body)


def serve(argv: list[str]) -> None:
    """Serve one request, then return."""
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    request = b""
    while b"\r\n\r\n" not in request:
        data = conn.recv(4096)
        if not data:
            return
        request += data
    conn.sendall(HEAD + b"%x\r\n%s\r\n" % (len(b"retry: 2000\n\n"), b"retry: 2000\n\n"))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    units = 1
    conn.sendall(frame("start", {"type": "start", "pid": proc.pid, "argv": argv}, units))
    eof = False
    while not eof:
        wait_read(fd)
        parts, total = [], 0
        while total < COALESCE:
            try:
                data = os.read(fd, READ)
            except BlockingIOError:
                break
            if not data:
                eof = True
                break
            parts.append(data)
            total += len(data)
            if len(data) < READ:
                break
        raw = b"".join(parts)
        text = decoder.decode(raw, final=eof)
        if text:
            units += len(raw)
            conn.sendall(frame("stdout", {"type": "stdout", "out": text}, units))
    code = proc.wait()
    units += 1
    conn.sendall(frame("exit", {"type": "exit", "reason": "exited", "code": code}, units) + b"0\r\n\r\n")
    conn.close()


if __name__ == "__main__":
    serve(sys.argv[1:])
