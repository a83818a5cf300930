"""Small helpers for tests that start jobs on a real server and wait for their end."""

from __future__ import annotations

import httpx

from .server import GunicornServer, process_state, wait_until


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    state = process_state(pid)
    return state is not None and state != "Z"


def post_job(server: GunicornServer, body: dict) -> dict:
    """POST /jobs, which must answer 201; the job."""
    response = httpx.post(server.url("/jobs"), json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def wait_final(server: GunicornServer, job_id: str, timeout: float) -> dict:
    """The job once it is in a final state (neither running nor stopping); fails after ``timeout``."""
    state: dict = {}

    def final() -> bool:
        state.update(httpx.get(server.url(f"/jobs/{job_id}"), timeout=5).json())
        return state["state"] not in ("running", "stopping")

    assert wait_until(final, timeout), state
    return state
