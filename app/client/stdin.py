"""Forwarding this terminal's input (or a pipe's) to a running job's stdin: ``run --stdin``, ``attach --stdin``.

A daemon thread reads our stdin as it comes (a terminal gives a line at a time) and posts each piece to
``POST /jobs/<id>/input``; our end of file becomes ``{"eof": true}``. The server never waits for a command
that is not reading: a full pipe takes what fits (409 ``input_full``, with ``written_bytes``), and the rest is
sent again after a pause. The main thread streams the job meanwhile, on its own connection.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

import httpx

from .api import Api, error_body
from .connection import Connection

READ_SIZE = 16384
FULL_PAUSE = (0.05, 1.0)  # first and longest pause before sending to a full pipe again


class _Stop(Exception):
    """Input cannot go on (the job ended, or closed its input)."""


class InputForwarder:
    """Our stdin, forwarded to job ``job_id``'s input until our end of file (then closed) or the job's end."""

    def __init__(self, connection: Connection, job_id: str, note: Callable[[str], None], fd: int = 0) -> None:
        self.api = Api(connection)  # a connection of its own: the main thread is streaming on the other
        self.path = f"/jobs/{quote(job_id, safe='')}/input"
        self.note = note
        self.fd = fd
        self.limit = READ_SIZE
        self.thread = threading.Thread(target=self._run, name="stdin", daemon=True)

    def start(self) -> InputForwarder:
        """Start forwarding, in the background."""
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            while True:
                data = os.read(self.fd, READ_SIZE)
                if not data:
                    self._post(json={"eof": True})
                    return
                self._send(data)
        except _Stop:
            return
        except (OSError, httpx.HTTPError) as exc:
            self.note(f"input not forwarded: {exc}")
        finally:
            self.api.close()

    def _send(self, data: bytes) -> None:
        pause = FULL_PAUSE[0]
        while data:
            piece = data[: self.limit]
            response = self._post(content=piece, headers={"Content-Type": "application/octet-stream"})
            if response.status_code == 200:
                data = data[len(piece):]
                pause = FULL_PAUSE[0]
                continue
            body = error_body(response)
            if response.status_code == 409 and body.get("error") == "input_full":
                data = data[int(body.get("written_bytes") or 0):]
                time.sleep(pause)
                pause = min(pause * 2, FULL_PAUSE[1])
            elif response.status_code == 413 and isinstance(body.get("limit_bytes"), int) and body["limit_bytes"] > 0:
                self.limit = min(self.limit, body["limit_bytes"])
            else:
                raise self._refused(response, body)

    def _post(self, **kwargs) -> httpx.Response:
        response = self.api.http.post(self.path, **kwargs)
        if "json" in kwargs and response.status_code != 200:
            raise self._refused(response, error_body(response))
        return response

    def _refused(self, response: httpx.Response, body: dict) -> _Stop:
        if body.get("error") != "job_not_running":  # the job's end is told by the stream
            self.note(f"input not forwarded: {body.get('message') or response.status_code}")
        return _Stop()
