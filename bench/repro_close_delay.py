"""Repro, outside the app, of the close delay after a GET /run response (see bench/README.md).

app/streaming/response.py:watch_for_disconnect() waits on the client socket's fd with its
own ``wait_read`` watcher; the stream ends with ``watcher.kill(block=False)``
and gunicorn then closes the socket. While the second watcher is still armed,
gevent defers the close to a libev *check* watcher, which runs only after the
next poll returns: with nothing else to do, at the next timer (gunicorn's
worker heartbeat, every second). ``kill(block=True)`` closes at once.

    .venv/bin/python bench/repro_close_delay.py      # prints both cases
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.socket import wait_read  # noqa: E402

CLIENT = """
import socket, sys, time
client = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
assert client.recv(3) == b"bye"
started = time.perf_counter()
assert client.recv(10) == b""
print(f"{1000 * (time.perf_counter() - started):.1f}")
"""


def close_delay_ms(block: bool) -> float:
    """Milliseconds between the server's last byte and its close reaching a client, after kill(block=...)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def heartbeat() -> None:
        while True:
            gevent.sleep(1.0)  # like gunicorn's worker notify loop

    def watch(conn: socket.socket) -> None:
        try:
            wait_read(conn.fileno())
            conn.recv(1, socket.MSG_PEEK)
        except OSError:
            pass

    def serve() -> None:
        conn, _ = listener.accept()
        watcher = gevent.spawn(watch, conn)
        gevent.sleep(0.1)
        conn.sendall(b"bye")
        watcher.kill(block=block)
        conn.close()

    beats = gevent.spawn(heartbeat)
    server = gevent.spawn(serve)
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(listener.getsockname()[1])],
                              stdout=subprocess.PIPE, text=True)
    out, _ = client.communicate()
    server.join()
    beats.kill()
    listener.close()
    return float(out)


if __name__ == "__main__":
    for block in (False, True):
        print(f"watcher.kill(block={block}) then close: the client sees the close {close_delay_ms(block):.1f} ms "
              "after the last byte")
