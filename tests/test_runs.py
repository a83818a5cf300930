"""Runs (issue 20) on one host, over the memory store: GET /hosts, POST/GET/DELETE /runs and the run's stream
through a real gunicorn server (the multi-host behaviour is tests/test_fleet.py's)."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest

from .server import PYTHON, helper, wait_until
from .sse_client import collect, iter_events, open_stream, payload, read_slowly
from .test_metrics import PROMTOOL, promtool

HTTP = httpx.Client(timeout=30)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    from .server import GunicornServer

    srv = GunicornServer(tmp_path_factory.mktemp("runs"), {
        "SSECMD_HOST_NAME": "solo", "SSECMD_HOST_TAGS": "web,eu", "SSECMD_HEARTBEAT_INTERVAL": "1",
        "SSECMD_HISTORY": "false",
    }).start()
    yield srv
    srv.stop()


def start_run(srv, **body) -> dict:
    response = HTTP.post(srv.url("/runs"), json=body)
    assert response.status_code == 201, response.text
    return response.json()


def wait_run(srv, run_id: str, timeout: float = 20) -> dict:
    assert wait_until(lambda: HTTP.get(srv.url(f"/runs/{run_id}")).json()["state"] != "running", timeout)
    return HTTP.get(srv.url(f"/runs/{run_id}")).json()


def test_get_hosts_lists_this_host_alone_up_with_its_tags(local):
    hosts = HTTP.get(local.url("/hosts")).json()["hosts"]
    assert [(h["name"], h["tags"], h["state"]) for h in hosts] == [("solo", ["web", "eu"], "up")]
    assert isinstance(hosts[0]["running_jobs"], int) and len(hosts[0]["load"]) == 3


def test_a_run_by_tag_streams_its_hosts_output_and_ends_with_run_exit(local):
    created = start_run(local, argv=["seq", "3"], tags=["eu"])
    assert created["hosts"] == ["solo"] and created["events"] == f"/runs/{created['id']}/events"
    events = collect(local.url(created["events"]), until="run_exit")
    kinds = [e.type for e in events]
    assert kinds[0] == "host_state" and payload(events[0])["state"] == "running"
    assert kinds[-2:] == ["host_state", "run_exit"] and payload(events[-2])["state"] == "succeeded"
    out = "".join(payload(e)["data"]["out"] for e in events if e.type == "stdout")
    assert out == "1\n2\n3\n"
    assert all(payload(e)["host"] == "solo" for e in events if e.type in ("stdout", "exit"))
    final = payload(events[-1])
    assert final["state"] == "succeeded" and final["failed_hosts"] == []
    assert final["hosts"][0]["exit_code"] == 0 and final["hosts"][0]["job"]
    # Resumed after run_exit: nothing more (204), as a finished job's stream answers.
    resumed = HTTP.get(local.url(created["events"]), headers={"Last-Event-ID": events[-1].last_event_id})
    assert resumed.status_code == 204


def test_a_resumed_run_stream_sends_the_rest_exactly_once(local):
    created = start_run(local, argv=["seq", "200"], hosts=["solo"])
    whole = collect(local.url(created["events"]), until="run_exit")
    for cut in (1, len(whole) // 2, len(whole) - 2):
        rest = collect(local.url(created["events"]), headers={"Last-Event-ID": whole[cut].last_event_id},
                       until="run_exit")
        assert [(e.type, e.data, e.last_event_id) for e in rest] == [
            (e.type, e.data, e.last_event_id) for e in whole[cut + 1:]]


def test_a_failing_command_fails_the_run_and_names_the_host(local):
    run = wait_run(local, start_run(local, argv=["false"], hosts=["solo"])["id"])
    assert (run["state"], run["failed_hosts"], run["hosts"][0]["state"], run["hosts"][0]["exit_code"]) == (
        "failed", ["solo"], "failed", 1)


def test_a_command_this_host_does_not_allow_is_refused_with_the_reason(local):
    run = wait_run(local, start_run(local, argv=["rm", "-rf", "/nowhere"], hosts=["solo"])["id"])
    host = run["hosts"][0]
    assert (run["state"], host["state"], host["job"]) == ("failed", "refused", None)
    assert "rm" in host["reason"]


def test_delete_cancels_the_running_job(local):
    created = start_run(local, argv=["sleep", "30"], hosts=["solo"])
    assert wait_until(lambda: HTTP.get(local.url(created["url"])).json()["hosts"][0]["state"] == "running", 10)
    cancelled = HTTP.delete(local.url(created["url"]))
    assert cancelled.status_code == 200, cancelled.text
    run = wait_run(local, created["id"])
    assert (run["state"], run["hosts"][0]["state"]) == ("cancelled", "cancelled")


@pytest.mark.parametrize(("body", "parameter"), [
    ({"argv": ["true"]}, "hosts"),
    ({"argv": ["true"], "hosts": ["solo"], "tags": ["web"]}, "hosts"),
    ({"argv": ["true"], "hosts": ["elsewhere"]}, "hosts"),
    ({"argv": ["true"], "hosts": []}, "hosts"),
    ({"argv": ["true"], "hosts": "solo"}, "hosts"),
    ({"argv": ["true"], "tags": ["db"]}, "tags"),
    ({"argv": ["true"], "hosts": ["solo"], "parallel": 0}, "parallel"),
    ({"argv": ["true"], "hosts": ["solo"], "parallel": True}, "parallel"),
    ({"argv": ["true"], "hosts": ["solo"], "parallel": "2"}, "parallel"),
    ({"argv": ["true"], "hosts": ["solo"], "stop_on_failure": "yes"}, "stop_on_failure"),
    ({"argv": ["true"], "hosts": ["solo"], "stdin": True}, "stdin"),
    ({"hosts": ["solo"]}, "command"),
    ({"argv": ["true"], "hosts": ["solo"], "timeout": -1}, "timeout"),
    ([1, 2], "body"),
])
def test_bad_input_is_a_400_naming_the_parameter(local, body, parameter):
    response = HTTP.post(local.url("/runs"), json=body)
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == parameter


def test_unknown_runs_and_bad_cursors_are_4xx_json(local):
    assert HTTP.get(local.url("/runs/nope")).status_code == 404
    assert HTTP.get(local.url("/runs/nope/events")).status_code == 404
    assert HTTP.delete(local.url("/runs/nope")).status_code == 404
    created = start_run(local, argv=["true"], hosts=["solo"])
    for bad in ("R.p0.p0", "X.p0", "R.z1", "R.p99999999999999999999", "garbage"):
        response = HTTP.get(local.url(created["events"]), headers={"Last-Event-ID": bad})
        assert response.status_code == 400 and response.json()["parameter"] == "Last-Event-ID", bad
    wait_run(local, created["id"])  # ended before the next test counts runs


def test_get_runs_lists_the_newest_runs_first_as_get_run_shows_each(local):
    first = wait_run(local, start_run(local, argv=["echo", "one"], hosts=["solo"])["id"])
    second = wait_run(local, start_run(local, argv=["echo", "two"], hosts=["solo"])["id"])
    listed = HTTP.get(local.url("/runs")).json()["runs"]
    assert [run["id"] for run in listed[:2]] == [second["id"], first["id"]]
    assert listed[0] == HTTP.get(local.url(f"/runs/{second['id']}")).json()
    assert [run["id"] for run in HTTP.get(local.url("/runs?limit=1")).json()["runs"]] == [second["id"]]
    for bad in ("0", "201", "x", "-1"):
        response = HTTP.get(local.url(f"/runs?limit={bad}"))
        assert response.status_code == 400 and response.json()["parameter"] == "limit", bad


def test_the_jobs_channel_announces_runs_and_metrics_count_them(local):
    before = HTTP.get(local.url("/metrics")).text
    created = start_run(local, argv=["true"], hosts=["solo"])
    wait_run(local, created["id"])
    announced = []
    with open_stream(local.url("/channels/jobs/events"), timeout=10) as response:
        for event in iter_events(response):
            if event.type == "run" and payload(event)["data"]["id"] == created["id"]:
                announced.append(payload(event)["data"]["state"])
                if len(announced) == 2:
                    break
    assert announced == ["running", "succeeded"]

    def value(text: str, name: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    after = HTTP.get(local.url("/metrics")).text
    assert value(after, "ssecmd_runs_total") == value(before, "ssecmd_runs_total") + 1
    succeeded = 'ssecmd_run_hosts_total{outcome="succeeded"}'
    assert value(after, succeeded) == value(before, succeeded) + 1
    if os.access(PROMTOOL, os.X_OK):  # tests/test_metrics.py says where it comes from
        checked = promtool("check", "metrics", stdin=after.encode())
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_output_is_the_jobs_own_bytes(local):
    created = start_run(local, argv=[PYTHON, helper("emit.py"), "out:e282ac0a", "err:6f6f7073"], hosts=["solo"])
    events = collect(local.url(created["events"]), until="run_exit")
    job = payload(next(e for e in events if e.type == "stdout"))["job"]
    own = collect(local.url(f"/jobs/{job}/events"))
    wrapped = [(e.type, payload(e)["id"], payload(e)["data"]) for e in events
               if e.type in ("start", "stdout", "stderr", "exit")]
    assert wrapped == [(e.type, int(e.last_event_id), json.loads(e.data)) for e in own]
    assert time.time() - payload(events[-1])["created_at"] < 60


def test_a_runs_first_output_reaches_its_stream_without_waiting_for_a_timer(local):
    # The coordinator saves the job's id as soon as its start returns, and the store tells the run's stream of
    # the save: nothing waits for a poll (each of the two waited up to 0.25 s, so it never took under 0.25 s).
    # Best of three, against a bound ten times what it takes on an idle machine.
    best = float("inf")
    for _ in range(3):
        started = time.monotonic()
        created = start_run(local, argv=["echo", "hi"], hosts=["solo"])
        with open_stream(local.url(created["events"])) as response:
            first = next(e for e in iter_events(response) if e.type == "stdout")
        best = min(best, time.monotonic() - started)
        assert payload(first)["data"]["out"] == "hi\n"
    assert best < 0.2, f"the first output took {best:.3f} s at best"


def test_a_run_ends_as_its_job_ends_not_on_the_coordinators_next_poll(local):
    # The job's end wakes the coordinator (Store.job_ended): before, it looked every 0.25 s, and the run ended
    # 0.18-0.26 s after its job. Median of five, against a bound well under that.
    delays = []
    for _ in range(5):
        run = wait_run(local, start_run(local, argv=["sleep", "0.3"], hosts=["solo"])["id"])
        delays.append(run["ended_at"] - run["hosts"][0]["ended_at"])
    assert sorted(delays)[2] < 0.1, f"the run ended {sorted(delays)} s after its job"


def test_a_large_output_reaches_a_slow_run_stream_whole(local):
    # 22.9 MB at `seq`'s full speed, more than job_buffer_bytes (16 MiB), read at about 20 MB/s: like GET
    # /run, a run's stream stands in for a terminal, so the job waits for it, from its start (the stream learns
    # of the job only once it has started) to its end. Unpaced, the stream found megabytes trimmed.
    count = 3_000_000
    created = start_run(local, argv=["seq", str(count)], hosts=["solo"])
    events = read_slowly(local.url(created["events"]), every=1 << 20, pause=0.05, until=b"event: run_exit")
    assert [e.type for e in events if e.type == "gap"] == []
    out = "".join(payload(e)["data"]["out"] for e in events if e.type == "stdout")
    assert len(out) > 16 * 1024 * 1024
    assert out == "".join(f"{n}\n" for n in range(1, count + 1))
    assert payload(events[-1])["state"] == "succeeded"
