"""GET /run: the seed tutorial's interface, against the real server."""

from __future__ import annotations

import time

import httpx
import pytest

from .server import PYTHON, helper
from .sse_client import collect, iter_events, open_stream, output_of, payload

# Also on the Redis store (issue 16): the same behaviour, whichever store holds the logs.
pytestmark = pytest.mark.backends("memory", "redis")


def test_run_streams_events_and_exit_code(server):
    events = collect(server.url("/run?command=ls%20/nonexistent-dir"))
    kinds = [e.type for e in events]
    assert kinds[0] == "start" and kinds[-1] == "exit"
    assert "stderr" in kinds
    exit_payload = payload(events[-1])
    assert exit_payload["reason"] == "exited" and exit_payload["code"] == 2
    ids = [int(e.last_event_id) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_first_bytes_arrive_before_the_command_prints(server):
    command = f"{PYTHON} {helper('emit.py')} out::1.5 out:6869"
    with open_stream(server.url(f"/run?command={command}")) as response:
        started = time.monotonic()
        first = next(response.iter_raw())
        assert time.monotonic() - started < 1.0
        assert first.startswith(b"retry: ")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"


def test_events_arrive_while_the_command_runs(server):
    command = f"{PYTHON} {helper('emit.py')} out:6669727374:2 out:7365636f6e64"
    with open_stream(server.url(f"/run?command={command}")) as response:
        started = time.monotonic()
        for event in iter_events(response):
            if event.type == "stdout":
                assert payload(event)["out"] == "first"
                assert time.monotonic() - started < 1.5
                break


def test_spawn_failure_event_is_not_named_error(make_server, tmp_path):
    not_executable = tmp_path / "plain-file"
    not_executable.write_text("not a program")
    srv = make_server({"SSECMD_ALLOWED_COMMANDS": f"echo {not_executable}"})
    events = collect(srv.url(f"/run?command={not_executable}"), until="err")
    assert [e.type for e in events] == ["err"]
    assert payload(events[0])["reason"] == "not_executable"
    job_id = httpx.get(srv.url("/jobs")).json()["jobs"][0]
    assert job_id["state"] == "failed_to_start"


def test_disallowed_command_is_403_json(server):
    response = httpx.get(server.url("/run?command=rm%20-rf%20/tmp/x"))
    assert response.status_code == 403
    assert response.json()["error"] == "command_not_allowed"


def test_shell_metacharacters_are_plain_arguments(server):
    events = collect(server.url("/run?command=echo%20a%3Bb%20%7C%20c%20%24(id)%20%60id%60%20%3E%20f"))
    assert output_of(events) == "a;b | c $(id) `id` > f\n"


def test_readme_ping_example_streams_each_line(server):
    started = time.monotonic()
    arrivals = []
    with open_stream(server.url("/run?command=ping%20-c%203%20-i%200.5%20127.0.0.1")) as response:
        for event in iter_events(response):
            if event.type == "stdout" and "icmp_seq" in payload(event)["out"]:
                arrivals.append(time.monotonic() - started)
            if event.type == "exit":
                assert payload(event)["code"] == 0
                break
    assert len(arrivals) == 3
    assert arrivals[0] < 0.9  # the first reply is shown long before ping ends (~1 s)
