"""Process lifecycle against the real server: group kills, timeouts, cancel, reaping, limits."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .server import PYTHON, children_of, group_members, helper, process_state, wait_until
from .sse_client import collect, iter_events, open_stream, output_of, payload


def _alive(pid: int) -> bool:
    state = process_state(pid)
    return state is not None and state != "Z"


def _pids_from(event) -> tuple[int, int]:
    _, parent, grandchild = payload(event)["out"].split()
    return int(parent), int(grandchild)


def _start_tree(server) -> tuple[int, int]:
    """Start tests/helpers/tree.py as a detached job; its (parent, grandchild) pids."""
    job = _post(server, {"argv": [PYTHON, helper("tree.py")]})
    with open_stream(server.url(job["urls"]["events"])) as response:
        for event in iter_events(response):
            if event.type == "stdout":
                return _pids_from(event)
    raise AssertionError("tree.py printed nothing")


def _zombies_under(pids: list[int]) -> list[int]:
    found = []
    for parent in pids:
        found += [pid for pid in children_of(parent) if process_state(pid) == "Z"]
    return found


def _post(server, body: dict) -> dict:
    response = httpx.post(server.url("/jobs"), json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def _wait_finished(server, job_id: str, timeout: float = 10) -> dict:
    state = {}

    def done() -> bool:
        state.update(httpx.get(server.url(f"/jobs/{job_id}")).json())
        return state["state"] != "running"

    assert wait_until(done, timeout), state
    return state


def test_disconnect_kills_the_whole_group_while_silent(make_server):
    server = make_server({"SSECMD_HEARTBEAT_INTERVAL": "60"})  # no heartbeat write could notice in time
    with open_stream(server.url(f"/run?command={PYTHON}%20{helper('tree.py')}")) as response:
        for event in iter_events(response):
            if event.type == "stdout":
                parent, grandchild = _pids_from(event)
                break
    # The client is gone and the command prints nothing more: only the socket watcher can notice.
    assert wait_until(lambda: not _alive(parent) and not _alive(grandchild), timeout=2.0)
    assert wait_until(lambda: not group_members(parent), timeout=2.0)
    jobs = httpx.get(server.url("/jobs")).json()["jobs"]
    killed = next(job for job in jobs if job["pid"] == parent)
    assert killed["state"] == "cancelled" and killed["reason"] == "disconnected"


def test_disconnect_of_an_http10_client_kills_the_group_while_silent(make_server):
    # HTTP/1.0 responses are not delivered directly, so here a socket watcher of the view's own notices
    # (with heartbeats a minute apart, no failed write could).
    server = make_server({"SSECMD_HEARTBEAT_INTERVAL": "60"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET /run?command={PYTHON}%20{helper('tree.py')} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = b""
        while b'"type":"stdout"' not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    stdout = next(line for line in received.split(b"\n") if b'"type":"stdout"' in line)
    _, parent, grandchild = json.loads(stdout[len(b"data: "):])["out"].split()
    parent, grandchild = int(parent), int(grandchild)
    assert wait_until(lambda: not _alive(parent) and not _alive(grandchild), timeout=2.0)
    assert wait_until(lambda: not group_members(parent), timeout=2.0)


def test_timeout_kills_group_and_reports_it(server):
    job = _post(server, {"argv": [PYTHON, helper("tree.py")], "timeout": 1})
    events = collect(server.url(job["urls"]["events"]), timeout=15)
    parent, grandchild = _pids_from(next(e for e in events if e.type == "stdout"))
    exit_event = payload(events[-1])
    assert exit_event["reason"] == "timeout"
    assert exit_event["signal_name"] == "SIGTERM" and exit_event["code"] is None
    assert httpx.get(server.url(job["urls"]["self"])).json()["state"] == "timed_out"
    assert wait_until(lambda: not _alive(parent) and not _alive(grandchild), timeout=2.0)


def test_cancel_escalates_to_sigkill(server):
    job = _post(server, {"argv": [PYTHON, helper("stubborn.py")]})
    with open_stream(server.url(job["urls"]["events"])) as response:
        for event in iter_events(response):
            if event.type == "stdout":
                break
    started = time.monotonic()
    response = httpx.delete(server.url(job["urls"]["self"]), timeout=15)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "cancelled" and body["signal_name"] == "SIGKILL"
    assert time.monotonic() - started < 5  # kill_grace is 1 s in tests
    again = httpx.delete(server.url(job["urls"]["self"]))
    assert again.status_code == 409 and again.json()["error"] == "job_not_running"


def test_leader_exit_ends_leftover_group_members_and_the_stream(server):
    # The grandchild keeps the stdout pipe open; the job still ends when its leader does.
    job = _post(server, {"argv": [PYTHON, helper("tree.py"), "0.2", "--hold"]})
    events = collect(server.url(job["urls"]["events"]), timeout=15)
    _, grandchild = _pids_from(next(e for e in events if e.type == "stdout"))
    exit_event = payload(events[-1])
    assert exit_event["reason"] == "exited" and exit_event["code"] == 0
    assert wait_until(lambda: not _alive(grandchild), timeout=3.0)


def test_no_zombies_after_jobs_of_every_ending(server):
    jobs = [
        _post(server, {"command": "true"}),
        _post(server, {"command": "false"}),
        _post(server, {"argv": [PYTHON, helper("tree.py"), "0.1", "--hold"]}),
        _post(server, {"argv": [PYTHON, helper("tree.py")], "timeout": 0.5}),
    ]
    for job in jobs:
        _wait_finished(server, job["id"])
    workers = server.worker_pids()
    assert wait_until(lambda: not _zombies_under(workers), timeout=3.0), _zombies_under(workers)
    for job in jobs:
        assert not group_members(job["pid"])


def test_job_keeps_running_without_viewers(server):
    job = _post(server, {"argv": [PYTHON, helper("emit.py"), "out:610a:1.0", "out:620a"]})
    with open_stream(server.url(job["urls"]["events"])) as response:
        next(iter_events(response))
    final = _wait_finished(server, job["id"])
    assert final["state"] == "exited" and final["output_bytes"] == 4


def test_no_output_lost_before_exit_for_many_short_commands(make_server):
    srv = make_server({"SSECMD_MAX_RUNNING_JOBS": "40"})

    def run(n: int) -> tuple[str, list[str]]:
        events = collect(srv.url(f"/run?command=echo%20line-{n}"), timeout=30)
        return output_of(events), [e.type for e in events]

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(run, range(200)))
    for n, (text, kinds) in enumerate(results):
        assert text == f"line-{n}\n"
        assert kinds[-1] == "exit" and kinds.index("stdout") < kinds.index("exit")


def test_too_many_jobs_is_429_with_retry_after(make_server):
    srv = make_server({"SSECMD_MAX_RUNNING_JOBS": "2"})
    first = _post(srv, {"command": "sleep 30"})
    _post(srv, {"command": "sleep 30"})
    refused = httpx.post(srv.url("/jobs"), json={"command": "sleep 30"})
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"] == "too_many_jobs"
    assert httpx.get(srv.url("/run?command=echo%20hi")).status_code == 429
    httpx.delete(srv.url(first["urls"]["self"]), timeout=10)
    assert httpx.post(srv.url("/jobs"), json={"command": "true"}).status_code == 201


def test_output_limit_kills_the_job(make_server):
    srv = make_server({"SSECMD_MAX_OUTPUT_BYTES": "100000"})
    job = _post(srv, {"command": "yes"})
    events = collect(srv.url(job["urls"]["events"]), timeout=15)
    assert payload(events[-1])["reason"] == "output_limit"
    final = httpx.get(srv.url(job["urls"]["self"])).json()
    assert final["output_bytes"] == 100000 and final["state"] == "killed"
    assert len(output_of(events)) == 100000


def test_children_get_a_minimal_environment(make_server):
    srv = make_server(extra_env={"MY_APP_SECRET": "hunter2", "AWS_SECRET_ACCESS_KEY": "s3cr3t"})
    events = collect(srv.url("/run?command=env"))
    env = dict(line.split("=", 1) for line in output_of(events).splitlines())
    assert set(env) == {"PATH", "LANG", "HOME", "PYTHONUNBUFFERED"}
    assert env["PYTHONUNBUFFERED"] == "1"


def test_children_get_dev_null_as_stdin(server):
    events = collect(server.url("/run?command=cat"), timeout=10)
    assert payload(events[-1]) | {"duration": 0, "cpu_seconds": 0, "peak_memory_bytes": 0} == {
        "type": "exit", "reason": "exited", "code": 0, "signal": None, "signal_name": None, "duration": 0,
        "cpu_seconds": 0, "peak_memory_bytes": 0,
    }


def test_sigkilled_worker_leaves_no_command_behind(make_server):
    srv = make_server()
    parent, grandchild = _start_tree(srv)
    (worker,) = srv.worker_pids()
    os.kill(worker, signal.SIGKILL)
    # The leader dies with its parent (PR_SET_PDEATHSIG); the master kills the rest of the group.
    assert wait_until(lambda: not _alive(parent) and not _alive(grandchild), timeout=5.0)
    assert wait_until(lambda: httpx.get(srv.url("/healthz")).status_code == 200, timeout=10)


def test_server_shutdown_kills_running_commands(make_server):
    srv = make_server()
    parent, grandchild = _start_tree(srv)
    srv.stop()
    assert wait_until(lambda: not _alive(parent) and not _alive(grandchild), timeout=5.0)


def test_flooding_command_does_not_starve_other_streams(make_server):
    srv = make_server({"SSECMD_MAX_OUTPUT_BYTES": "0"})
    flood = _post(srv, {"command": "yes", "timeout": 30})
    with open_stream(srv.url(flood["urls"]["events"])) as flood_stream:
        next(flood_stream.iter_raw())
        command = f"{PYTHON}%20{helper('emit.py')}" + "".join(f"%20out:{n:02x}0a:0.2" for n in range(5))
        arrivals = []
        with open_stream(srv.url(f"/run?command={command}")) as response:
            started = time.monotonic()
            for event in iter_events(response):
                if event.type == "stdout":
                    arrivals.append(time.monotonic() - started)
                if event.type == "exit":
                    break
    httpx.delete(srv.url(flood["urls"]["self"]), timeout=10)
    assert len(arrivals) == 5
    # Written every 0.2 s; even with a flooding neighbour each line arrives close to on time.
    for n, arrival in enumerate(arrivals):
        assert arrival < 0.2 * n + 1.0, arrivals


def test_slow_run_client_gets_every_byte_without_gaps(make_server):
    srv = make_server({"SSECMD_JOB_BUFFER_BYTES": "65536"})
    command = f"{PYTHON}%20{helper('emit.py')}%20out:79*1048576"
    from .sse_parser import EventStreamParser

    parser = EventStreamParser()
    with open_stream(srv.url(f"/run?command={command}")) as response:
        for chunk in response.iter_raw(4096):
            parser.feed(chunk)
            time.sleep(0.0005)  # a reader much slower than the command
            if parser.events and parser.events[-1].type == "exit":
                break
    kinds = {event.type for event in parser.events}
    assert "gap" not in kinds
    assert len(output_of(parser.events)) == 1048576


@pytest.mark.parametrize("history", ["true", "false"])
def test_finished_jobs_are_kept_by_count_and_by_age(make_server, history):
    srv = make_server({"SSECMD_MAX_FINISHED_JOBS": "3", "SSECMD_FINISHED_JOB_TTL": "2", "SSECMD_HISTORY": history})
    ids = []
    for n in range(5):
        ids.append(_post(srv, {"command": f"echo {n}"})["id"])
        _wait_finished(srv, ids[-1])
    listed = [job["id"] for job in httpx.get(srv.url("/jobs")).json()["jobs"]]
    assert listed == ids[:1:-1]  # the newest three, newest first
    assert wait_until(lambda: httpx.get(srv.url(f"/jobs/{ids[-1]}")).status_code == 404, timeout=5)


def test_allow_any_command_is_explicit_and_reports_missing_programs(make_server):
    srv = make_server({"SSECMD_ALLOW_ANY_COMMAND": "true"})
    events = collect(srv.url("/run?command=no-such-program-xyz"), until="err")
    assert [e.type for e in events] == ["err"]
    assert payload(events[0])["reason"] == "not_found"
    assert output_of(collect(srv.url("/run?command=uname"))) != ""


def test_head_on_run_starts_nothing(server):
    before = len(httpx.get(server.url("/jobs")).json()["jobs"])
    response = httpx.head(server.url("/run?command=sleep%2030"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert len(httpx.get(server.url("/jobs")).json()["jobs"]) == before
