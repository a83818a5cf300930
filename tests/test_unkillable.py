"""Every job reaches a final state, against the real server: hung before its exec, unkillable, or escaped.

The hangs come from tests/fusehang.py: the server runs in a mount namespace of
its own with a FUSE file system that answers until told to hang, "pending"
(a SIGKILL still ends the wait, like a hung NFS mount) or "stuck" (not even
SIGKILL: the process sleeps uninterruptibly until the file system lets go).
"""

from __future__ import annotations

import os
import signal
import sys
import time

import httpx
import pytest

from tests import fusehang

from .job_support import alive, post_job, wait_final
from .server import HELPERS, PYTHON, GunicornServer, helper, process_state, wait_until
from .sse_client import collect, iter_events, open_stream, payload

KILL_GRACE = 1.0
UNKILLABLE_AFTER = 5.0






def _job(server, job_id: str) -> dict:
    return httpx.get(server.url(f"/jobs/{job_id}"), timeout=5).json()




@pytest.fixture
def hanging_server(tmp_path):
    """Start a server that sees a HangingFS (in its own mount namespace); yields (make, control)."""
    reason = fusehang.available()
    if reason:
        pytest.skip(reason)
    control = fusehang.Control.make(tmp_path)
    started = []

    def make(settings: dict[str, str]) -> GunicornServer:
        srv = GunicornServer(tmp_path, {"SSECMD_KILL_GRACE": str(KILL_GRACE), **settings})
        srv.args = [sys.executable, str(HELPERS / "in_private_mount.py"), str(control.dir), "--", *srv.args]
        started.append(srv.start())
        control.wait_serving()
        return srv

    yield make, control
    control.set("release")  # whatever hangs dies now, so the servers stop cleanly
    for srv in started:
        srv.stop()


def test_a_command_hanging_before_its_exec_still_times_out(hanging_server):
    make, control = hanging_server
    srv = make({"SSECMD_CHILD_CWD": str(control.mountpoint / "x")})  # served at start-up, hung below
    control.set("pending")
    started = time.monotonic()
    job = post_job(srv, {"command": "sleep 30", "timeout": 1})  # answers before the exec that never comes
    assert time.monotonic() - started < 5
    final = wait_final(srv, job["id"], timeout=1 + KILL_GRACE + 10)
    assert final["state"] == "timed_out" and final["reason"] == "timeout"
    assert "stuck trying to enter the working directory" in final["error"]
    events = collect(srv.url(job["urls"]["events"]), timeout=10)
    assert payload(events[-1])["reason"] == "timeout"


def test_delete_of_a_command_hanging_before_its_exec_ends_it(hanging_server):
    make, control = hanging_server
    srv = make({"SSECMD_CHILD_CWD": str(control.mountpoint / "x")})
    control.set("pending")
    job = post_job(srv, {"command": "sleep 30"})
    started = time.monotonic()
    response = httpx.delete(srv.url(job["urls"]["self"]), timeout=15)
    assert time.monotonic() - started < KILL_GRACE + 1
    assert response.status_code == 200 and response.json()["state"] == "cancelled", response.text


def test_an_unkillable_job_is_given_up_on_and_its_slot_freed(hanging_server):
    make, control = hanging_server
    srv = make({"SSECMD_MAX_RUNNING_JOBS": "1", "SSECMD_ALLOWED_COMMANDS": "ls sleep"})
    control.set("stuck")
    # ls waits for the file system uninterruptibly: not even SIGKILL (nor cgroup.kill) ends it.
    job = post_job(srv, {"argv": ["ls", str(control.mountpoint / "y")]})
    assert wait_until(lambda: process_state(job["pid"]) in ("S", "D"), timeout=5)
    started = time.monotonic()
    response = httpx.delete(srv.url(job["urls"]["self"]), timeout=15)
    assert time.monotonic() - started < KILL_GRACE + 1
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "stopping"
    assert _job(srv, job["id"])["state"] == "stopping"
    assert httpx.post(srv.url("/jobs"), json={"command": "sleep 1"}, timeout=10).status_code == 429  # slot taken
    final = wait_final(srv, job["id"], timeout=KILL_GRACE + UNKILLABLE_AFTER + 5)
    assert time.monotonic() - started < KILL_GRACE + UNKILLABLE_AFTER + 3
    assert final["state"] == "unkillable" and final["reason"] == "unkillable"
    assert "did not die" in final["error"]
    assert alive(job["pid"])  # the premise: it really could not be killed
    events = collect(srv.url(job["urls"]["events"]), timeout=10)
    assert payload(events[-1])["reason"] == "unkillable"
    assert [j["id"] for j in httpx.get(srv.url("/jobs?state=unkillable")).json()["jobs"]] == [job["id"]]
    assert "unkillable" in srv.log()
    assert post_job(srv, {"command": "sleep 0"})["state"] in ("running", "exited")  # the slot is free
    control.set("release")  # the file system lets go: the process dies, and is reaped
    assert wait_until(lambda: not alive(job["pid"]), timeout=10)


def test_without_cgroups_an_escapee_holding_the_output_ends_its_job_as_unkillable(make_server):
    # Process groups cannot reach what left with setsid(): the job still ends, kill_grace + 5 s after its leader.
    srv = make_server({"SSECMD_CGROUP": "off", "SSECMD_KILL_GRACE": str(KILL_GRACE)})
    job = post_job(srv, {"argv": [PYTHON, helper("escape.py"), "--hold"]})
    escapee = None
    try:
        with open_stream(srv.url(job["urls"]["events"]), timeout=20) as response:
            for event in iter_events(response):
                if event.type == "stdout":
                    escapee = int(payload(event)["out"].split()[2])
                    break
        final = wait_final(srv, job["id"], timeout=KILL_GRACE + UNKILLABLE_AFTER + 5)
        assert final["state"] == "unkillable"
        assert final["exit_code"] == 0  # the leader itself had exited
        assert "outside its process group" in final["error"]
        assert alive(escapee)
    finally:
        if escapee is not None:
            os.kill(escapee, signal.SIGKILL)
