"""The app in-process, through Flask's test client: for HTTP behaviour that needs no stream, process or socket.

Validation, authentication and access decisions and JSON errors are answered by
the same ``create_app(Settings)`` that gunicorn serves, configured from the same
``SSECMD_*`` settings the real-server fixtures use (tests/server.py), without
booting gunicorn for each module. Streaming, processes, shutdown, nginx and the
browser keep the real server.

``AppClient`` answers like httpx (``status_code``, ``headers``, ``content``,
``text``, ``json()``), so the assertions read the same either way.
"""

from __future__ import annotations

import json as json_module
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask
from werkzeug.datastructures import Headers
from werkzeug.test import TestResponse

from app import create_app
from app.config import load_settings
from app.http.web import EXTENSION_KEY
from app.service import Service
from app.states import JobState
from app.store.base import job_key
from app.store.jobs import Job

from .server import server_defaults


class _Headers(Headers):
    """Response headers, also with httpx's name for all the values of one."""

    def get_list(self, key: str) -> list[str]:
        """Every value of a header (Set-Cookie, say)."""
        return self.getlist(key)


class Answer:
    """A test client's response, read like an httpx.Response."""

    def __init__(self, response: TestResponse) -> None:
        self.status_code = response.status_code
        self.headers = _Headers(response.headers)
        self.content: bytes = response.get_data()
        response.close()

    @property
    def text(self) -> str:
        """The body as UTF-8 text."""
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON."""
        return json_module.loads(self.content)

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies the response sets (name -> value)."""
        found = {}
        for header in self.headers.getlist("Set-Cookie"):
            name, _, rest = header.partition("=")
            found[name] = rest.split(";", 1)[0]
        return found


class AppClient:
    """Flask's test client for one app: no cookies kept (each request says which it sends), httpx-like calls."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._client = app.test_client(use_cookies=False)

    @property
    def service(self) -> Service:
        """The app's Service (for setting up what a test needs, such as a finished job)."""
        return self.app.extensions[EXTENSION_KEY]

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str | bytes] | None = None,
        params: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        follow_redirects: bool = False,
        remote_addr: str = "127.0.0.1",
    ) -> Answer:
        """Send one request to the app and read its whole answer (from ``remote_addr``, loopback by default)."""
        sent = {name: value.decode("latin-1") if isinstance(value, bytes) else value
                for name, value in (headers or {}).items()}
        if cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
        if params:
            path = f"{path}{'&' if '?' in path else '?'}{urlencode(params)}"
        body: Any = content
        if json is not None:
            body = json_module.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        elif data is not None:
            body = urlencode(data)
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        response = self._client.open(
            path, method=method, data=body, headers=sent, follow_redirects=follow_redirects,
            environ_base={"REMOTE_ADDR": remote_addr},
        )
        return Answer(response)

    def get(self, path: str, **kwargs: Any) -> Answer:
        """GET ``path``."""
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> Answer:
        """HEAD ``path``."""
        return self.request("HEAD", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Answer:
        """POST ``path``."""
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Answer:
        """DELETE ``path``."""
        return self.request("DELETE", path, **kwargs)

    def options(self, path: str, **kwargs: Any) -> Answer:
        """OPTIONS ``path``."""
        return self.request("OPTIONS", path, **kwargs)

    def finished_job(self, argv: list[str], owner: str = "anonymous", output: bytes = b"") -> Job:
        """A job that ran and exited 0, as the store keeps it (set up directly: nothing runs in-process)."""
        store = self.service.store
        job = store.create_job(argv, 60, "jobs", owner=owner)
        log = store.local_log(job.id)
        store.mark_started(job.id, 1)
        log.append("start", {"type": "start", "job": job.id, "pid": 1, "argv": argv})
        if output:
            log.append("stdout", {"type": "stdout", "out": output.decode()}, output)
        log.append("exit", {"type": "exit", "reason": "exited", "code": 0, "signal": None})
        return store.finish_job(job.id, state=JobState.EXITED, reason="exited", exit_code=0)

    def job_events(self, job_id: str) -> list[str]:
        """The kinds of a job's stored events."""
        return [event.kind for event in self.service.store.read(job_key(job_id), 0).events]


def app_client(tmp_path: Path, settings: Mapping[str, str] | None = None, *, test_defaults: bool = True) -> AppClient:
    """The app built from ``SSECMD_*`` settings as tests/server.py's GunicornServer would be, in-process."""
    environ = {"SSECMD_RUN_DIR": str(tmp_path / "run"), "SSECMD_AUDIT_LOG": ""}
    environ["SSECMD_DATA_DIR"] = str(tmp_path / "data")  # history on, never in the user's home
    if test_defaults:
        environ.update(server_defaults())
    environ.update(settings or {})
    return AppClient(create_app(load_settings(environ)))


@contextmanager
def audit_records(client: AppClient) -> Iterator[list[dict]]:
    """The audit records the app writes while the block runs (its audit log turned on, to a list)."""
    records: list[dict] = []
    audit = client.service.audit
    enabled, record = audit.enabled, audit.record
    audit.enabled = True
    audit.record = lambda kind, **fields: records.append({"audit": kind, **fields})  # type: ignore[method-assign]
    try:
        yield records
    finally:
        audit.enabled, audit.record = enabled, record
