"""The Redis store (issue 16) across workers and hosts: two gunicorn masters, 2 workers each, one redis-server.

Each master has its own run_dir, host_name and port, as two hosts would: a job
started through one is read through the other, and a channel reaches every
subscriber of every worker. (tests/conftest.py runs a set of the single-server
HTTP tests on the Redis store too.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time

import httpx
import pytest

from .channel_support import HTTP, Subscriber, epoch, fresh, id_number, publish, publish_raw
from .server import PYTHON, GunicornServer, helper, wait_until
from .sse_client import collect, iter_events, open_stream, payload, read_slowly

BUFFER = 65536  # job_buffer_bytes: small, so that a job's stream is trimmed


@pytest.fixture(scope="module")
def hosts(redis_server, tmp_path_factory):
    """Two 'hosts' (gunicorn masters) on one Redis."""
    redis_server.client().flushall()
    started = []
    for name in ("host-a", "host-b"):
        settings = {
            "SSECMD_STORE_URL": redis_server.url,
            "SSECMD_HOST_NAME": name,
            "SSECMD_HEARTBEAT_INTERVAL": "1",
            "SSECMD_JOB_BUFFER_BYTES": str(BUFFER),
            "SSECMD_ALLOW_STDIN": "true",
        }
        started.append(GunicornServer(tmp_path_factory.mktemp(name), settings, workers=2).start())
    yield started
    for srv in started:
        srv.stop()


def start_job(srv: GunicornServer, command: str) -> str:
    response = HTTP.post(srv.url("/jobs"), json={"command": command})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def emit(*writes: str) -> str:
    return f"{PYTHON} {helper('emit.py')} " + " ".join(writes)


def frames(events) -> list[tuple[str, str, str]]:
    return [(e.last_event_id, e.type, e.data) for e in events]


def test_a_job_started_on_one_host_is_viewed_resumed_and_downloaded_on_the_other(hosts):
    a, b = hosts
    lines = [f"out:{f'line {n}'.encode().hex()}0a:0.03" for n in range(30)]
    job = start_job(a, emit(*lines))
    live = collect(b.url(f"/jobs/{job}/events"))  # follows it live from the other host, to its exit
    assert live[0].type == "start" and live[-1].type == "exit"
    assert "".join(payload(e)["out"] for e in live if e.type == "stdout") == "".join(
        f"line {n}\n" for n in range(30)
    )
    assert frames(collect(a.url(f"/jobs/{job}/events"))) == frames(live)  # the same ids and bytes everywhere
    middle = live[len(live) // 2]
    resumed = collect(b.url(f"/jobs/{job}/events"), headers={"Last-Event-ID": middle.last_event_id})
    assert frames(resumed) == frames(live[len(live) // 2 + 1:])
    assert HTTP.get(b.url(f"/jobs/{job}/output")).content == b"".join(f"line {n}\n".encode() for n in range(30))
    record = HTTP.get(b.url(f"/jobs/{job}")).json()
    assert (record["state"], record["output_bytes"]) == ("exited", sum(len(f"line {n}\n") for n in range(30)))


def test_a_resume_mid_stream_on_the_other_host_joins_without_gaps_or_duplicates(hosts):
    a, b = hosts
    job = start_job(a, emit(*(f"out:{n:02x}0a:0.05" for n in range(40))))
    seen = []
    with httpx.Client(timeout=10) as client, client.stream("GET", a.url(f"/jobs/{job}/events")) as response:
        from .sse_parser import EventStreamParser

        parser = EventStreamParser()
        for chunk in response.iter_raw():
            seen += parser.feed(chunk)
            if len([e for e in seen if e.type == "stdout"]) >= 5:
                break
    rest = collect(b.url(f"/jobs/{job}/events"), headers={"Last-Event-ID": seen[-1].last_event_id})
    assert rest[-1].type == "exit"
    whole = collect(a.url(f"/jobs/{job}/events"))
    assert frames(seen + rest) == frames(whole)


def test_a_viewer_behind_the_trim_gets_the_same_gap_from_either_host(hosts):
    a, b = hosts
    job = start_job(a, emit("out:41*4096:0.01", *("out:42*4096:0.01" for _ in range(40)), "out:43*10"))
    assert wait_until(lambda: HTTP.get(b.url(f"/jobs/{job}")).json()["state"] == "exited", 15)
    from_b = collect(b.url(f"/jobs/{job}/events"))
    from_a = collect(a.url(f"/jobs/{job}/events"))
    assert frames(from_b) == frames(from_a)
    assert [e.type for e in from_b[:2]] == ["start", "gap"]
    missed = payload(from_b[1])["missed_bytes"]
    assert 0 < missed < 4096 * 41, missed
    kept = sum(len(payload(e)["out"]) for e in from_b if e.type == "stdout")
    assert kept + missed == 4096 * 41 + 10  # what was dropped, and what was kept: every byte accounted for


def test_a_slow_viewer_on_the_other_host_paces_the_job_and_misses_nothing(hosts):
    # A megabyte at once, sixteen times job_buffer_bytes: unpaced, the owner trims it long before a reader on
    # another host has it. The job waits for its viewer there instead (a window of half the buffer).
    a, b = hosts
    job = start_job(a, emit("out:2e0a:0.5", "out:41*1000000", "out:0a"))
    events = read_slowly(b.url(f"/jobs/{job}/events"), every=32768, pause=0.01, until=b"event: exit")
    assert [e.type for e in events if e.type == "gap"] == []
    assert "".join(payload(e)["out"] for e in events if e.type == "stdout") == ".\n" + "A" * 1_000_000 + "\n"


def test_a_viewer_elsewhere_that_stops_reading_holds_the_job_for_a_few_seconds_only(hosts):
    # Its socket fills and its position stops: after VIEWER_STALL (5 s) the job no longer waits for it (and no
    # longer keeps what it has not read); send_timeout (30 s) would be far later. It gets a gap when it reads.
    a, b = hosts
    size = 8_000_000
    job = start_job(a, emit("out:2e0a:0.5", f"out:42*{size}"))
    with open_stream(b.url(f"/jobs/{job}/events")) as response:
        began = time.monotonic()
        assert wait_until(lambda: HTTP.get(a.url(f"/jobs/{job}")).json()["state"] == "exited", 25)
        took = time.monotonic() - began
        events = list(iter_events(response))
    assert 2 < took < 20, took
    gaps = [payload(e)["missed_bytes"] for e in events if e.type == "gap"]
    kept = sum(len(payload(e)["out"]) for e in events if e.type == "stdout")
    assert gaps and kept + sum(gaps) == size + 2


def test_get_jobs_lists_every_hosts_jobs(hosts):
    a, b = hosts
    mine = {start_job(a, "echo from-a"), start_job(b, "echo from-b")}
    for srv in hosts:
        listed = {job["id"] for job in HTTP.get(srv.url("/jobs")).json()["jobs"]}
        assert mine <= listed
    assert wait_until(lambda: all(
        job["state"] == "exited" for job in HTTP.get(b.url("/jobs")).json()["jobs"] if job["id"] in mine), 10)
    running = {job["id"] for job in HTTP.get(b.url("/jobs?state=running")).json()["jobs"]}
    assert not mine & running


def _connections_by_worker(srv: GunicornServer) -> dict[int, int]:
    """Established client connections each worker of ``srv`` holds (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == srv.port and fields[3] == "01":
                    inodes.add(fields[9])
    counts = {}
    for pid in srv.worker_pids():
        fd_dir = f"/proc/{pid}/fd"
        links = []
        for fd in os.listdir(fd_dir):
            try:
                links.append(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                continue
        counts[pid] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
    return counts


def test_a_channel_message_reaches_every_subscriber_on_every_worker(hosts):
    channel = fresh("fanout")
    subs = []
    try:
        # Open subscribers until every worker of both hosts holds some (the kernel spreads the accepts).
        for _ in range(80):
            for srv in hosts:
                subs.append(Subscriber(srv, f"/channels/{channel}/events").connected())
            spread = [count for srv in hosts for count in _connections_by_worker(srv).values()]
            if len(subs) >= 16 and len(spread) == 4 and min(spread) >= 2:
                break
        assert len(spread) == 4 and min(spread) >= 1, spread
        sent = [publish(hosts[0], channel, "one")["id"], publish(hosts[1], channel, "two")["id"]]
        for sub in subs:
            events = sub.wait_events(2)
            assert [e.last_event_id for e in events] == sent, (len(subs), spread)
            assert [json.loads(e.data)["data"] for e in events] == ["one", "two"]
    finally:
        for sub in subs:
            sub.close()


def test_a_flushed_channel_gets_a_new_epoch_and_its_readers_a_reset(hosts, redis_server):
    a, b = hosts
    channel = fresh("flushed")
    old = publish(a, channel, "before")["id"]
    with Subscriber(b, f"/channels/{channel}/events", {"Last-Event-ID": old}) as live:
        assert live.connected().status == 200
        time.sleep(0.3)  # parked, caught up
        redis_server.client().flushall()  # what a restart without persistence does
        new = publish(a, channel, "after")["id"]
        assert epoch(new) != epoch(old) and id_number(new) == 1
        events = live.wait_events(2)
        assert [e.type for e in events] == ["reset", "message"], [(e.type, e.data) for e in events]
        assert json.loads(events[0].data) == {"missed": "unknown"}
        assert events[1].last_event_id == new
    with Subscriber(b, f"/channels/{channel}/events", {"Last-Event-ID": old}) as late:
        events = late.connected().wait_events(2)
        assert [e.type for e in events] == ["reset", "message"] and events[1].last_event_id == new


def test_a_job_is_cancelled_through_the_other_host_as_a_local_delete_answers(hosts):
    a, b = hosts
    job = start_job(a, "sleep 30")
    with Subscriber(b, f"/jobs/{job}/events") as viewer:
        assert viewer.connected().status == 200
        viewer.wait_events(1)  # its start
        response = HTTP.delete(b.url(f"/jobs/{job}"))
        assert response.status_code == 200, response.text
        assert (response.json()["state"], response.json()["reason"]) == ("cancelled", "cancelled")
        events = viewer.wait_events(2)
        assert events[-1].type == "exit" and payload(events[-1])["reason"] == "cancelled"
    again = HTTP.delete(a.url(f"/jobs/{job}"))
    assert again.status_code == 409 and again.json()["error"] == "job_not_running"


def _input(srv: GunicornServer, job: str, data: bytes | None) -> httpx.Response:
    """POST /jobs/<id>/input: ``data`` as an octet-stream body, or {"eof": true} without it."""
    if data is None:
        return HTTP.post(srv.url(f"/jobs/{job}/input"), json={"eof": True})
    return HTTP.post(srv.url(f"/jobs/{job}/input"), content=data,
                     headers={"Content-Type": "application/octet-stream"})


def test_input_through_the_other_host_reaches_the_job_byte_exact_and_eof_ends_it(hosts):
    a, b = hosts
    response = HTTP.post(a.url("/jobs"), json={"argv": ["cat"], "stdin": True})
    assert response.status_code == 201, response.text
    job = response.json()["id"]
    first, second = b"one\x00two\xff\xfe\n", b"\x80tail\x00"  # a NUL and bytes that are not UTF-8
    for data in (first, second):
        answer = _input(b, job, data)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"job": job, "written_bytes": len(data), "eof": False}
    closed = _input(b, job, None)
    assert closed.status_code == 200, closed.text
    assert closed.json() == {"job": job, "written_bytes": 0, "eof": True}
    assert wait_until(lambda: HTTP.get(b.url(f"/jobs/{job}")).json()["state"] == "exited", 10)
    assert HTTP.get(b.url(f"/jobs/{job}")).json()["exit_code"] == 0  # cat read end of file
    assert HTTP.get(b.url(f"/jobs/{job}/output")).content == first + second
    after = _input(b, job, b"late")
    assert after.status_code == 409 and after.json()["error"] == "job_not_running", after.text


def test_input_through_the_other_host_is_refused_as_a_local_write_would_be(hosts):
    a, b = hosts
    plain = start_job(a, "sleep 30")
    refused = _input(b, plain, b"x")
    assert refused.status_code == 409 and refused.json()["error"] == "no_stdin", refused.text
    response = HTTP.post(a.url("/jobs"), json={"argv": ["sleep", "30"], "stdin": True})
    assert response.status_code == 201, response.text
    deaf = response.json()["id"]  # takes input it never reads: the pipe fills
    answers = [_input(b, deaf, b"z" * 65536) for _ in range(2)]
    full = answers[-1]
    assert full.status_code == 409 and full.json()["error"] == "input_full", full.text
    assert 0 <= full.json()["written_bytes"] < 65536
    assert _input(b, deaf, None).status_code == 200
    closed = _input(b, deaf, b"x")
    assert closed.status_code == 409 and closed.json()["error"] == "input_closed", closed.text
    for job in (plain, deaf):
        assert HTTP.delete(b.url(f"/jobs/{job}")).status_code == 200


def test_input_nobody_takes_gets_a_503_and_is_never_written_late(hosts, redis_server):
    a, b = hosts
    response = HTTP.post(a.url("/jobs"), json={"argv": ["cat"], "stdin": True})
    assert response.status_code == 201, response.text
    job = response.json()["id"]
    redis = redis_server.client()
    redis.hset(f"ssec:job:{job}", "_host", "host-silent")  # its worker's host, as far as requests know, is mute
    try:
        asked_at = time.monotonic()
        unanswered = _input(b, job, b"never\n")
        waited = time.monotonic() - asked_at
        assert unanswered.status_code == 503 and unanswered.json()["error"] == "store_unavailable", unanswered.text
        assert "nothing was written" in unanswered.json()["message"] and waited < 10, (unanswered.text, waited)
        [(_, request)] = redis.xrange("ssec:ctl:host-silent")
    finally:
        redis.hset(f"ssec:job:{job}", "_host", "host-a")
    redis.xadd("ssec:ctl:host-a", request)  # the abandoned request reaches the worker after all: it is dropped
    answer = _input(b, job, b"later\n")
    assert answer.status_code == 200, answer.text
    assert _input(b, job, None).status_code == 200
    assert wait_until(lambda: HTTP.get(b.url(f"/jobs/{job}")).json()["state"] == "exited", 10)
    assert HTTP.get(b.url(f"/jobs/{job}/output")).content == b"later\n"


def _exit_entries(redis_server, job: str) -> int:
    return sum(1 for _, fields in redis_server.client().xrange(f"ssec:log:job:{job}") if fields[b"k"] == b"exit")


def _kill_group(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_a_dead_workers_running_jobs_are_lost_at_once_with_one_exit_event(hosts, redis_server):
    a, b = hosts
    job = start_job(a, "sleep 30")
    worker = int(redis_server.client().hget(f"ssec:job:{job}", "_worker"))
    with Subscriber(b, f"/jobs/{job}/events") as viewer:
        assert viewer.connected().status == 200
        viewer.wait_events(1)
        os.kill(worker, signal.SIGKILL)  # the master's child_exit marks its jobs lost
        events = viewer.wait_events(2, timeout=10)
    assert events[-1].type == "exit" and payload(events[-1])["reason"] == "lost", [e.data for e in events]
    record = HTTP.get(b.url(f"/jobs/{job}")).json()
    assert (record["state"], record["reason"]) == ("lost", "lost")
    assert _exit_entries(redis_server, job) == 1
    assert wait_until(lambda: len(a.worker_pids()) == 2, 20)  # gunicorn replaced the worker


def test_a_host_killed_whole_has_its_jobs_lost_within_10_s_and_viewers_elsewhere_get_the_exit(
    hosts, redis_server, tmp_path
):
    b = hosts[1]
    doomed = GunicornServer(tmp_path, {"SSECMD_STORE_URL": redis_server.url, "SSECMD_HOST_NAME": "host-doomed",
                                       "SSECMD_HEARTBEAT_INTERVAL": "1"}, workers=2).start()
    jobs = [start_job(doomed, "sleep 30") for _ in range(2)]
    pids = [HTTP.get(b.url(f"/jobs/{job}")).json()["pid"] for job in jobs]
    try:
        with Subscriber(b, f"/jobs/{jobs[0]}/events") as viewer:
            assert viewer.connected().status == 200
            viewer.wait_events(1)
            for pid in [doomed.pid, *doomed.worker_pids()]:
                os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            events = viewer.wait_events(2, timeout=15)
            assert events[-1].type == "exit" and payload(events[-1])["reason"] == "lost"
            assert time.monotonic() - killed_at < 10
        for job in jobs:
            assert HTTP.get(b.url(f"/jobs/{job}")).json()["state"] == "lost"
            assert _exit_entries(redis_server, job) == 1
        # Announced as a job's end is, so a run's coordinator (on any host) looks at once.
        announced = {fields[b"job"].decode() for _, fields in redis_server.client().xrange("ssec:runs:changed")
                     if b"job" in fields}
        assert set(jobs) <= announced
    finally:
        doomed.proc.wait(5)
        for pid in pids:
            _kill_group(pid)


@pytest.mark.nginx
@pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin") is None, reason="nginx is not installed")
def test_behind_one_nginx_upstream_a_job_is_started_on_one_host_and_viewed_resumed_cancelled_on_the_other(
    hosts, redis_server, tmp_path
):
    from .test_nginx import NginxServer

    a, b = hosts
    proxy = NginxServer(tmp_path, a.port)
    site = proxy.site.read_text()
    site = site.replace(f"server 127.0.0.1:{a.port};",
                        f"server 127.0.0.1:{a.port};\n    server 127.0.0.1:{b.port};", 1)
    # Each answer names the host that served it: gunicorn's access log is written after the
    # answer, so counting its lines right after a request races with the request itself.
    proxy.site.write_text(site.replace("proxy_pass http://sse_commander;",
                                       "proxy_pass http://sse_commander;\n        "
                                       "add_header X-Served-By $upstream_addr always;"))
    proxy.start()
    try:
        job = start_job(proxy, emit(*(f"out:{n:02x}0a:0.1" for n in range(100))))
        owner = redis_server.client().hget(f"ssec:job:{job}", "_host").decode()
        other = b if owner == "host-a" else a
        owner_host = a if other is b else b

        def served_by(response) -> int:
            """The port of the host that served an answer through nginx."""
            return int(response.headers["X-Served-By"].rpartition(":")[2])

        def on_the_other(attempt) -> object:
            """Run ``attempt`` through nginx until the host that does not run the job has served it."""
            for _ in range(4):
                port, result = attempt()
                if port == other.port:
                    return result
            raise AssertionError("round-robin never sent the request to the other host")

        def view_some():
            seen = []
            with open_stream(proxy.url(f"/jobs/{job}/events")) as response:
                for event in iter_events(response):
                    seen.append(event)
                    if len(seen) >= 4:
                        return served_by(response), seen
            return served_by(response), seen

        def resume():
            with open_stream(proxy.url(f"/jobs/{job}/events"),
                             headers={"Last-Event-ID": seen[-1].last_event_id}) as response:
                return served_by(response), next(iter_events(response))

        seen = on_the_other(view_some)
        assert [e.type for e in seen] == ["start", "stdout", "stdout", "stdout"]
        resumed = on_the_other(resume)
        assert int(resumed.last_event_id) > int(seen[-1].last_event_id)
        # A DELETE can't be retried like the GETs above (the owner would cancel the job itself), so
        # steer round-robin first: once the owner has served a GET, the next request goes to the other.
        for _ in range(4):
            if served_by(HTTP.get(proxy.url(f"/jobs/{job}"))) == owner_host.port:
                break
        cancelled = HTTP.delete(proxy.url(f"/jobs/{job}"))
        assert served_by(cancelled) == other.port, "round-robin sent the DELETE to the owner"
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
        whole = collect(a.url(f"/jobs/{job}/events"))
        assert frames(seen) == frames(whole[:4]) and payload(whole[-1])["reason"] == "cancelled"
        ids = [event.last_event_id for event in whole]
        assert frames([resumed]) == frames([whole[ids.index(seen[-1].last_event_id) + 1]]), "the resume lost or doubled"
    finally:
        proxy.stop()


def test_rate_limits_are_shared_by_every_host(redis_server, make_server, tmp_path):
    limits = {"SSECMD_STORE_URL": redis_server.url, "SSECMD_RATE_LIMIT_PER_MINUTE": "1",
              "SSECMD_RATE_LIMIT_BURST": "3"}
    first = make_server({**limits, "SSECMD_HOST_NAME": "limit-a"})
    (tmp_path / "b").mkdir()
    second = GunicornServer(tmp_path / "b", {**limits, "SSECMD_HOST_NAME": "limit-b"}).start()
    try:
        answers = [HTTP.post(srv.url("/jobs"), json={"command": "true"}).status_code
                   for srv in (first, first, first, second, second)]
        assert answers == [201, 201, 201, 429, 429]  # per worker, the second host would have allowed 3 more
    finally:
        second.stop()


def test_max_channels_counts_every_hosts_channels_and_expired_ones_make_room(redis_server, make_server):
    client = redis_server.client()
    first = make_server({"SSECMD_STORE_URL": redis_server.url, "SSECMD_HOST_NAME": "room-a"})
    HTTP.get(first.url("/channels"))  # the system channels exist
    limit = client.scard("ssec:channels") + 2
    srv = make_server({"SSECMD_STORE_URL": redis_server.url, "SSECMD_HOST_NAME": "room-b",
                       "SSECMD_MAX_CHANNELS": str(limit)})
    names = [fresh("room") for _ in range(3)]
    publish(srv, names[0], 1)
    publish(first, names[1], 2)  # made through another host: it counts all the same
    refused = publish_raw(srv, names[2], b"3", "text/plain")
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_channels", refused.text
    client.delete(f"ssec:meta:channel:{names[0]}", f"ssec:log:channel:{names[0]}")  # as its TTL would
    assert publish(srv, names[2], 3)["id"]


def test_an_owner_that_comes_back_after_its_job_was_lost_appends_nothing_and_a_batch_sent_twice_lands_once(
    redis_server,
):
    # The owner's entries are plain XADDs (writer.py): JOB_LOST fences the stream, and Redis's own "equal or
    # smaller" makes a re-sent batch a no-op. Driven directly, one flush at a time.
    from app.store.eventlog import EventLog
    from app.store.redis import liveness
    from app.store.redis.scripts import JOB_APPEND
    from app.store.redis.writer import JobWriter
    from app.streaming.sse import output_json

    client = redis_server.client()
    job = f"fence{os.getpid()}"
    record, stream = f"ssec:job:{job}", f"ssec:log:job:{job}"
    client.hset(record, mapping={"id": json.dumps(job), "owner": json.dumps("u"), "state": json.dumps("running"),
                                 "_host": "h", "_worker": "1", "_last": "0", "_dropped": "0"})
    client.sadd("ssec:running:h", job)
    writer = JobWriter(client, client.register_script(JOB_APPEND), lambda _: [record, stream], 1 << 20, 60,
                       lambda _: f"ssec:pace:{job}")
    log_ = EventLog(1 << 20)

    def flush(*events):
        for event in events:
            writer.add(job, event)
        writer._flusher.kill()
        writer._flush()
        assert not writer.failing

    def output(text: bytes):
        return log_.append("stdout", output_json("stdout", text), text)

    start, one = log_.append("start", {"type": "start", "job": job}), output(b"one\n")
    flush(start, one)
    flush(one)  # sent again, as after a dropped connection: applied once
    assert [fields[b"k"] for _, fields in client.xrange(stream)] == [b"start", b"stdout"]
    assert int(client.hget(record, "_last")) == one.id and client.hget(record, "_start_id") == str(start.id).encode()

    assert liveness.mark_lost(client, job, "h", "1", None, 60)
    flush(output(b"two\n"), log_.append("exit", {"type": "exit", "reason": "exited"}))  # the owner, back too late
    entries = client.xrange(stream)
    assert [fields[b"k"] for _, fields in entries] == [b"start", b"stdout", b"exit"]
    assert json.loads(client.hget(record, "state")) == "lost"
    assert int(client.hget(record, "_last")) == int(entries[-1][0].split(b"-")[0])
    client.delete(record, stream)


def test_a_jobs_record_updates_ride_with_its_events_and_wait_out_an_outage_in_order(redis_server):
    # The runner's updates (started, ended) go in the MULTI of the job's next batch (writer.update_record): none
    # is lost while Redis is away, and they land after the events queued before them.
    import redis as redis_py

    from app.store.eventlog import EventLog
    from app.store.redis.scripts import JOB_APPEND
    from app.store.redis.writer import JobWriter
    from app.streaming.sse import output_json

    from .server import free_port

    client = redis_server.client()
    job = f"ride{os.getpid()}"
    record, stream = f"ssec:job:{job}", f"ssec:log:job:{job}"
    client.hset(record, mapping={"id": json.dumps(job), "_last": "0", "_dropped": "0"})
    away = redis_py.Redis(port=free_port(), socket_connect_timeout=0.5, retry=None)  # refused at once
    writer = JobWriter(away, client.register_script(JOB_APPEND), lambda _: [record, stream], 1 << 20, 60,
                       lambda _: f"ssec:pace:{job}")
    log_ = EventLog(1 << 20)
    writer.update_record(job, [("HSET", record, "pid", "42")])
    writer.add(job, log_.append("start", {"type": "start", "job": job}))
    writer.add(job, log_.append("stdout", output_json("stdout", b"one\n"), b"one\n"))
    writer.update_record(job, [("HSET", record, "state", json.dumps("exited"))])
    writer._flusher.kill()
    writer._flush()
    assert writer.failing and not client.exists(stream)
    writer.client = client  # Redis is back
    writer._flusher.kill()
    writer._flush()
    assert not writer.failing
    assert [fields[b"k"] for _, fields in client.xrange(stream)] == [b"start", b"stdout"]
    assert client.hmget(record, "pid", "state") == [b"42", json.dumps("exited").encode()]
    client.delete(record, stream)
