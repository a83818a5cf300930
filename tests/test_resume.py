"""Resume with Last-Event-ID, many viewers, bounded buffers and graceful restarts."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .server import PYTHON, helper, wait_until
from .sse_client import collect, iter_events, open_stream, output_of, payload
from .sse_parser import EventStreamParser

# Also on the Redis store (issue 16): the same behaviour, whichever store holds the logs.
pytestmark = pytest.mark.backends("memory", "redis")


def _lines_command(count: int, pause: float = 0.05) -> list[str]:
    return [PYTHON, helper("emit.py"), *(f"out:{f'line {n}'.encode().hex()}0a:{pause}" for n in range(count))]


def _finished_job(server, argv: list[str]) -> dict:
    response = httpx.post(server.url("/jobs"), json={"argv": argv})
    assert response.status_code == 201, response.text
    job = response.json()
    collect(server.url(job["urls"]["events"]))
    return job


def test_resume_from_a_middle_id_has_no_gaps_or_duplicates(server):
    job = _finished_job(server, _lines_command(10))
    everything = collect(server.url(job["urls"]["events"]))
    ids = [int(e.last_event_id) for e in everything]
    assert ids == sorted(set(ids))
    middle = len(everything) // 2
    resumed = collect(server.url(job["urls"]["events"]), headers={"Last-Event-ID": str(ids[middle])})
    assert [(e.type, e.data, e.last_event_id) for e in resumed] == [
        (e.type, e.data, e.last_event_id) for e in everything[middle + 1:]
    ]
    by_query = collect(server.url(job["urls"]["events"] + f"?last_event_id={ids[middle]}"))
    assert [e.data for e in by_query] == [e.data for e in resumed]
    # The header wins over the query parameter.
    both = collect(server.url(job["urls"]["events"] + "?last_event_id=0"), headers={"Last-Event-ID": str(ids[-2])})
    assert [e.type for e in both] == ["exit"]


def test_resume_while_running_joins_replay_and_live_without_gaps(server):
    job = httpx.post(server.url("/jobs"), json={"argv": _lines_command(20, 0.1)}).json()
    seen = []
    with open_stream(server.url(job["urls"]["events"])) as response:
        for event in iter_events(response):
            seen.append(event)
            if len(seen) == 5:
                break  # drop the connection mid-job
    resumed = collect(server.url(job["urls"]["events"]), headers={"Last-Event-ID": seen[-1].last_event_id})
    text = output_of(seen + resumed)
    assert text == "".join(f"line {n}\n" for n in range(20))


def test_resume_after_the_final_event_is_204(server):
    job = _finished_job(server, ["echo", "done"])
    events = collect(server.url(job["urls"]["events"]))
    response = httpx.get(server.url(job["urls"]["events"]), headers={"Last-Event-ID": events[-1].last_event_id})
    assert response.status_code == 204


def test_unknown_job_is_404_json(server):
    response = httpx.get(server.url("/jobs/0123456789abcdef/events"))
    assert response.status_code == 404
    assert response.json()["error"] == "job_not_found"


def test_run_reconnect_never_runs_the_command_again(server):
    response = httpx.get(server.url("/run?command=echo%20again"), headers={"Last-Event-ID": "3"})
    assert response.status_code == 204


def test_many_viewers_see_the_same_events(server):
    job = httpx.post(server.url("/jobs"), json={"argv": _lines_command(10, 0.1)}).json()

    def watch(_: int) -> list[tuple[str, str, str]]:
        return [(e.type, e.data, e.last_event_id) for e in collect(server.url(job["urls"]["events"]))]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(watch, range(8)))
    assert all(result == results[0] for result in results)
    assert results[0][-1][0] == "exit"


def test_viewer_behind_the_buffer_is_told_how_many_bytes_it_missed(make_server):
    srv = make_server({"SSECMD_JOB_BUFFER_BYTES": "65536", "SSECMD_HISTORY": "false"})
    argv = [PYTHON, helper("emit.py"), *["out:79*1000:0.001"] * 200]
    job = _finished_job(srv, argv)
    events = collect(srv.url(job["urls"]["events"]))
    assert events[0].type == "start"  # the start event is kept whatever is dropped
    gap = next(e for e in events if e.type == "gap")
    kept = len(output_of(events))
    assert payload(gap)["missed_bytes"] + kept == 200_000
    info = httpx.get(srv.url(job["urls"]["self"])).json()
    assert info["dropped_bytes"] == payload(gap)["missed_bytes"]
    assert info["output_bytes"] == 200_000


def test_heartbeat_comments_while_idle(server):
    parser = EventStreamParser()
    with open_stream(server.url("/run?command=sleep%202.5")) as response:
        for chunk in response.iter_raw():
            parser.feed(chunk)
            if any(event.type == "exit" for event in parser.events):
                break
    assert parser.comments.count(" ping") >= 2  # heartbeat interval is 1 s on this server


def test_graceful_restart_ends_streams_with_retry(make_server):
    srv = make_server({"SSECMD_HEARTBEAT_INTERVAL": "1"}, graceful_timeout=30)
    job = httpx.post(srv.url("/jobs"), json={"command": "sleep 60"}).json()
    parser = EventStreamParser()
    with open_stream(srv.url(job["urls"]["events"])) as response:
        chunks = response.iter_raw()
        parser.feed(next(chunks))
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGHUP)
        for chunk in chunks:  # ends cleanly: a truncated chunked body would raise here
            parser.feed(chunk)
        elapsed = time.monotonic() - started
    assert elapsed < 15  # well before graceful_timeout (30 s)
    assert parser.retry is not None and parser.retry >= 2000
    assert any("restarting" in comment for comment in parser.comments)
    assert payload(parser.events[-1])["reason"] == "shutdown"
    assert wait_until(lambda: httpx.get(srv.url("/healthz")).status_code == 200, timeout=10)
