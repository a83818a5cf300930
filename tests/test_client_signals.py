"""Ctrl-C in the client (SIGINT to its process): run cancels, a second Ctrl-C detaches; attach only detaches."""

from __future__ import annotations

import os
import signal
import time

import httpx

from .client_support import client, no_traceback, read_until, start_client
from .server import PYTHON, helper, wait_until


def _job(server, job_id: str) -> dict:
    return httpx.get(server.url(f"/jobs/{job_id}"), timeout=10).json()


def _newest_job(server) -> dict:
    return httpx.get(server.url("/jobs"), timeout=10).json()["jobs"][0]


def _ticker(marker: str = "tick") -> list[str]:
    """A job that prints a line now, then one every 0.2 s for a minute."""
    script = f"import time\nfor i in range(300):\n    print('{marker}', i, flush=True)\n    time.sleep(0.2)"
    return [PYTHON, "-c", script]


def test_ctrl_c_in_run_cancels_the_job_and_waits_for_its_end(server):
    proc = start_client(server, "run", "--", *_ticker())
    assert b"tick 0" in read_until(proc.stdout, b"tick 1\n")
    job = _newest_job(server)
    assert job["state"] == "running"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=20)
    no_traceback(err)
    # The job's final state was waited for: the exit status is the remote one (SIGTERM), and the job is over.
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"cancelling job {job['id']} (Ctrl-C again to detach)".encode() in err
    assert b"was cancelled (killed by SIGTERM)" in err
    assert _job(server, job["id"])["state"] == "cancelled"


def test_a_second_ctrl_c_in_run_detaches_and_says_how_to_reattach(make_server):
    srv = make_server({"SSECMD_KILL_GRACE": "30"})  # the stubborn job outlives the first Ctrl-C for long
    proc = start_client(srv, "run", "--", PYTHON, helper("stubborn.py"))
    read_until(proc.stdout, b"ignoring SIGTERM\n")
    job_id = _newest_job(srv)["id"]
    proc.send_signal(signal.SIGINT)
    assert b"cancelling job" in read_until(proc.stderr, b"again to detach)\n")
    time.sleep(0.5)  # the client is now waiting for the DELETE, which waits for the job's end
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=10)
    no_traceback(err)
    assert proc.returncode == 130
    assert f"reattach with: sse-commander attach {job_id}".encode() in err
    assert _job(srv, job_id)["state"] == "stopping"  # the server still stops it, after its grace period
    # Reattach: the rest of the story, and the final status, from the job's start.
    # Reattach, and see the job from its start.
    reattached = start_client(srv, "attach", job_id)
    assert b"ignoring SIGTERM\n" in read_until(reattached.stdout, b"ignoring SIGTERM\n")
    os.kill(_job(srv, job_id)["pid"], signal.SIGKILL)  # rather than wait out the 30 s grace period
    _, err = reattached.communicate(timeout=10)
    assert reattached.returncode == 128 + signal.SIGKILL, err


def test_reattach_after_a_detach_gets_the_rest_and_the_exit_code(server):
    script = "\n".join(["import time", "print('before', flush=True)", "time.sleep(1.5)", "print('after', flush=True)",
                        "raise SystemExit(3)"])
    proc = start_client(server, "run", "--", PYTHON, "-c", script)
    read_until(proc.stdout, b"before\n")
    job_id = _newest_job(server)["id"]
    # Meanwhile someone else attaches, detaches, and comes back.
    detached = start_client(server, "attach", job_id)
    read_until(detached.stdout, b"before\n")
    detached.send_signal(signal.SIGINT)
    _, err = detached.communicate(timeout=10)
    assert detached.returncode == 130 and f"attach {job_id}".encode() in err
    reattached = client(server, "attach", job_id)
    assert reattached.stdout == b"before\nafter\n" and reattached.returncode == 3
    proc.communicate(timeout=10)
    assert proc.returncode == 3


def test_ctrl_c_in_attach_only_detaches(server):
    started = client(server, "run", "--detach", "--", *_ticker("attached"))
    job_id = started.stdout.decode().strip()
    proc = start_client(server, "attach", job_id)
    read_until(proc.stdout, b"attached 1\n")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    no_traceback(err)
    assert proc.returncode == 130
    assert err.decode().strip() == (
        f"sse-commander: detached from job {job_id}, which keeps running; reattach with: sse-commander attach {job_id}"
    )
    time.sleep(0.5)
    assert _job(server, job_id)["state"] == "running"
    assert client(server, "cancel", job_id).returncode == 0


def test_ctrl_c_in_tail_and_logs_ends_quietly_with_130(server):
    tail = start_client(server, "tail", "ops")
    assert wait_until(lambda: any(c["name"] == "ops" and c["subscribers"] for c in
                                  httpx.get(server.url("/channels")).json()["channels"]), 10)
    tail.send_signal(signal.SIGINT)
    _, err = tail.communicate(timeout=10)
    assert tail.returncode == 130 and err == b""
    job_id = client(server, "run", "--detach", "--", *_ticker("logged")).stdout.decode().strip()
    logs = start_client(server, "logs", job_id)
    read_until(logs.stdout, b"logged 1\n")
    logs.send_signal(signal.SIGINT)
    _, err = logs.communicate(timeout=10)
    assert logs.returncode == 130 and err == b""
    assert client(server, "cancel", job_id).returncode == 0
