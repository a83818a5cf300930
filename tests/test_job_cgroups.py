"""A cgroup per job, against the real server: what leaves the process group still ends with its job.

This machine has a writable cgroup2 mount without the memory and pids
controllers: cgroup.kill, cgroup.events and cpu.stat are tested here; the
limits' tests skip where their controller is missing.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests import cgroup_support

from .job_support import alive, post_job, wait_final
from .server import PYTHON, group_members, helper, wait_until
from .sse_client import collect, iter_events, open_stream, payload

pytestmark = pytest.mark.skipif(cgroup_support.skip_reason() is not None, reason=str(cgroup_support.skip_reason()))






def _first_stdout(server, job: dict) -> str:
    with open_stream(server.url(job["urls"]["events"]), timeout=20) as response:
        for event in iter_events(response):
            if event.type == "stdout":
                return payload(event)["out"]
            assert event.type not in ("exit", "err"), event.data
    raise AssertionError("no output")


def _pids(text: str) -> tuple[int, int]:
    _, leader, escapee = text.split()
    return int(leader), int(escapee)




def _base(server) -> Path:
    return Path(cgroup_support.writable_root()) / f"sse-commander-{server.pid}"


def _containment(server) -> dict:
    return httpx.get(server.url("/healthz"), timeout=5).json()["containment"]


@pytest.fixture(scope="module")
def cgroup_server(tmp_path_factory):
    from .server import GunicornServer

    srv = GunicornServer(tmp_path_factory.mktemp("cgroups"), {"SSECMD_KILL_GRACE": "1"}).start()
    yield srv
    srv.stop()


def test_healthz_and_the_startup_log_say_how_jobs_are_contained(cgroup_server, make_server):
    containment = _containment(cgroup_server)
    assert containment["mode"] == "cgroup" and containment["cgroup"] == "mount"
    assert set(containment["limits"]) <= {"memory.max", "pids.max"}
    line = f"containment: a cgroup per job (mount) under {_base(cgroup_server)}; limits: "
    assert line in cgroup_server.log()
    off = make_server({"SSECMD_CGROUP": "off"})
    assert _containment(off) == {"mode": "process_group", "cgroup": None, "limits": []}
    assert "containment: process groups (cgroup = off)" in off.log()


def test_a_setsid_escapee_ends_with_its_job(cgroup_server):
    # The leader exits at once; the escapee holds the job's stdout open. With process groups alone the job
    # ran "forever"; its cgroup catches the escapee.
    job = post_job(cgroup_server, {"argv": [PYTHON, helper("escape.py"), "--hold"]})
    _, escapee = _pids(_first_stdout(cgroup_server, job))
    final = wait_final(cgroup_server, job["id"], timeout=10)
    assert final["state"] == "exited" and final["exit_code"] == 0
    assert wait_until(lambda: not alive(escapee), timeout=5)


def test_cancel_reaches_setsid_escapees(cgroup_server):
    job = post_job(cgroup_server, {"argv": [PYTHON, helper("escape.py"), "600", "--hold"]})
    leader, escapee = _pids(_first_stdout(cgroup_server, job))
    started = time.monotonic()
    response = httpx.delete(cgroup_server.url(job["urls"]["self"]), timeout=15)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    assert time.monotonic() - started < 1 + 1  # kill_grace + 1 s
    assert wait_until(lambda: not alive(leader) and not alive(escapee), timeout=5)


def test_cpu_time_is_in_the_exit_event_and_the_metadata(cgroup_server):
    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    job = post_job(cgroup_server, {"argv": [PYTHON, "-c", busy]})
    events = collect(cgroup_server.url(job["urls"]["events"]), timeout=20)
    exit_event = payload(events[-1])
    assert exit_event["reason"] == "exited"
    assert 0.25 <= exit_event["cpu_seconds"] < 5
    metadata = httpx.get(cgroup_server.url(job["urls"]["self"]), timeout=5).json()
    assert metadata["cpu_seconds"] == exit_event["cpu_seconds"]
    if "memory.max" in _containment(cgroup_server)["limits"]:
        assert exit_event["peak_memory_bytes"] > 1 << 20
    else:  # no memory controller here: not measurable
        assert exit_event["peak_memory_bytes"] is None and metadata["peak_memory_bytes"] is None


def test_job_cgroups_are_removed_and_so_is_the_server_s_at_its_exit(make_server):
    srv = make_server()
    base = _base(srv)
    for command in ("true", "false", "echo hi"):
        wait_final(srv, post_job(srv, {"command": command})["id"], timeout=10)
    (worker,) = srv.worker_pids()
    worker_dir = base / f"worker-{worker}"
    assert wait_until(lambda: not list(worker_dir.glob("job-*")), timeout=5), list(worker_dir.iterdir())
    srv.stop()
    assert not base.exists()


def test_a_worker_killed_by_sigkill_leaves_no_escapee_behind(make_server):
    # The leader dies with the worker (PR_SET_PDEATHSIG); the master kills the rest of the worker's cgroups,
    # which hold what left the process group too.
    srv = make_server()
    job = post_job(srv, {"argv": [PYTHON, helper("escape.py"), "600"]})
    leader, escapee = _pids(_first_stdout(srv, job))
    assert not group_members(leader) or escapee not in group_members(leader)  # it did escape
    (worker,) = srv.worker_pids()
    os.kill(worker, signal.SIGKILL)
    assert wait_until(lambda: not alive(leader) and not alive(escapee), timeout=10)
    assert wait_until(lambda: not (_base(srv) / f"worker-{worker}").exists(), timeout=10)
    assert wait_until(lambda: httpx.get(srv.url("/healthz")).status_code == 200, timeout=10)


def test_memory_max_ends_a_job_that_exceeds_it(make_server):
    srv = make_server({"SSECMD_JOB_MEMORY_MAX": str(64 << 20)})
    if "memory.max" not in _containment(srv)["limits"]:
        pytest.skip("no memory controller for job cgroups on this host")
    hog = "chunks = []\nwhile True: chunks.append(bytearray(16 << 20))"
    job = post_job(srv, {"argv": [PYTHON, "-c", hog], "timeout": 30})
    final = wait_final(srv, job["id"], timeout=30)
    assert final["state"] == "killed" and final["signal_name"] == "SIGKILL"
    assert final["peak_memory_bytes"] <= 64 << 20


def test_pids_max_bounds_the_processes_of_a_job(make_server):
    srv = make_server({"SSECMD_JOB_PIDS_MAX": "20", "SSECMD_RLIMIT_NPROC": "0"})
    if "pids.max" not in _containment(srv)["limits"]:
        pytest.skip("no pids controller for job cgroups on this host")
    bomb = (
        "import os, time\nforked = failed = 0\nfor _ in range(100):\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        failed += 1\n        continue\n"
        "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    forked += 1\n"
        "print(forked, failed, flush=True)"
    )
    job = post_job(srv, {"argv": [PYTHON, "-c", bomb], "timeout": 30})
    forked, failed = map(int, _first_stdout(srv, job).split())
    assert forked < 20 and failed > 0
    httpx.delete(srv.url(job["urls"]["self"]), timeout=15)
