"""Fleets' pure code (issue 20): a run's states and window, targets and options, the stream's cursor and frames,
host_tags and roles' hosts."""

from __future__ import annotations

import json

import pytest

from app.config import ConfigError, load_settings
from app.fleet.cursor import HostCursor, InvalidCursor, RunCursor, parse_cursor
from app.fleet.frames import step
from app.fleet.runstate import HostRun, Run, outcome_of_job
from app.fleet.targets import InvalidRun, host_state, parse_options, select_targets, split_run_request
from app.policy.access import AccessConfigError, Policy, Principal, parse_roles
from app.store.base import LogEvent, LogRead
from app.streaming.sse import encode_json_frame

from .sse_parser import EventStreamParser


def make_run(*names: str, parallel: int | None = None, stop: bool = False) -> Run:
    return Run(id="r" * 16, user="alice", command="true", hosts=[HostRun(n) for n in names], parallel=parallel,
               stop_on_failure=stop)


def test_the_window_starts_at_most_parallel_hosts_in_order_and_the_next_as_one_ends():
    run = make_run("a", "b", "c", parallel=2)
    assert [h.host for h in run.to_start(set())] == ["a", "b"]
    assert [h.host for h in run.to_start({"a"})] == ["b"]  # a's start is under way
    run.host("a").state, run.host("b").state = "running", "running"
    assert run.to_start(set()) == []
    run.host("a").end("succeeded", exit_code=0)
    assert [h.host for h in run.to_start(set())] == ["c"]
    assert [h.host for h in make_run("a", "b", "c").to_start({"a"})] == ["b", "c"]  # no parallel: all at once


def test_stop_on_failure_skips_the_pending_hosts_and_never_the_running_ones():
    run = make_run("a", "b", "c", "d", parallel=2, stop=True)
    run.host("a").state = run.host("b").state = "running"
    run.host("a").end("failed", exit_code=3)
    assert run.to_start(set()) == []
    assert run.skip_rest({"c"})  # c's start is under way: it is not skipped
    assert [h.state for h in run.hosts] == ["failed", "running", "pending", "skipped"]
    assert "stop_on_failure" in run.host("d").reason


@pytest.mark.parametrize(("states", "aggregate", "failed"), [
    (["succeeded", "running"], "running", []),
    (["succeeded", "pending"], "running", []),
    (["succeeded", "succeeded"], "succeeded", []),
    (["failed", "refused"], "failed", ["a", "b"]),
    (["succeeded", "lost"], "partial", ["b"]),
    (["unreachable", "skipped"], "failed", ["a", "b"]),
])
def test_the_aggregate_and_the_failed_hosts(states, aggregate, failed):
    run = make_run("a", "b")
    for host, state in zip(run.hosts, states, strict=True):
        host.state = state
    assert (run.state, run.failed_hosts) == (aggregate, failed)


def test_a_cancelled_run_is_cancelled_once_every_host_has_ended_and_its_record_round_trips():
    run = make_run("a", "b")
    run.cancelled = True
    run.host("a").state = "running"
    run.skip_rest(set())
    assert run.state == "running"
    run.host("a").end("cancelled")
    run.host("a").end("succeeded")  # a final state is never changed
    assert (run.state, [h.state for h in run.hosts]) == ("cancelled", ["cancelled", "skipped"])
    again = Run.from_record(json.loads(json.dumps(run.to_record())))
    assert again.to_record() == run.to_record()


@pytest.mark.parametrize(("state", "code", "outcome"), [
    ("exited", 0, "succeeded"), ("exited", 2, "failed"), ("killed", None, "failed"), ("timed_out", None, "failed"),
    ("lost", None, "lost"), ("interrupted", None, "lost"), ("cancelled", None, "cancelled"),
    ("failed_to_start", None, "failed"),
])
def test_a_hosts_outcome_from_its_jobs_end(state, code, outcome):
    assert outcome_of_job(state, code) == outcome


KNOWN = {"web-1": ["web", "eu"], "web-2": ["web"], "db-1": ["db"]}


def test_targets_by_name_keep_the_order_given_and_by_tag_every_host_with_any_sorted():
    assert select_targets({"hosts": ["web-2", "db-1", "web-2"]}, KNOWN) == ["web-2", "db-1"]
    assert select_targets({"tags": ["eu", "db"]}, KNOWN) == ["db-1", "web-1"]


@pytest.mark.parametrize(("run", "parameter", "words"), [
    ({}, "hosts", "exactly one"),
    ({"hosts": ["web-1"], "tags": ["web"]}, "hosts", "exactly one"),
    ({"hosts": ["web-9"]}, "hosts", "web-9"),
    ({"hosts": []}, "hosts", "non-empty"),
    ({"hosts": [1]}, "hosts", "not a name"),
    ({"hosts": ["a b"]}, "hosts", "not a name"),
    ({"tags": ["nope"]}, "tags", "nope"),
    ({"tags": "web"}, "tags", "list"),
])
def test_bad_targets_name_the_parameter(run, parameter, words):
    with pytest.raises(InvalidRun) as caught:
        select_targets(run, KNOWN)
    assert caught.value.parameter == parameter and words in str(caught.value)


def test_a_long_list_of_unknown_names_is_named_in_part():
    with pytest.raises(InvalidRun) as caught:
        select_targets({"hosts": [f"h{n}" for n in range(1000)]}, KNOWN)
    assert str(caught.value).startswith("unknown host(s): h0, h1,") and "and 990 more" in str(caught.value)


def test_options_and_the_split_of_a_run_request():
    assert parse_options({}) == (None, False)
    assert parse_options({"parallel": 3, "stop_on_failure": True}) == (3, True)
    for bad in (0, -1, True, 1.5, "2", 10**9):
        with pytest.raises(InvalidRun, match="parallel"):
            parse_options({"parallel": bad})
    with pytest.raises(InvalidRun, match="stop_on_failure"):
        parse_options({"stop_on_failure": None})
    run, job = split_run_request({"argv": ["true"], "tags": ["web"], "parallel": 1, "timeout": 5})
    assert run == {"tags": ["web"], "parallel": 1} and job == {"argv": ["true"], "timeout": 5}
    for body, parameter in (([], "body"), ({"argv": ["cat"], "hosts": ["a"], "stdin": True}, "stdin")):
        with pytest.raises(InvalidRun) as caught:
            split_run_request(body)
        assert caught.value.parameter == parameter


def test_a_host_is_up_then_stale_then_down_as_its_heartbeat_ages():
    assert [host_state(100.0, now) for now in (100.0, 103.0, 105.0, 106.0, 107.0)] == [
        "up", "up", "stale", "stale", "down"]


def test_a_cursor_round_trips_and_a_foreign_one_is_refused():
    cursor = RunCursor([HostCursor("running", 120), HostCursor("succeeded", 35), HostCursor()])
    assert cursor.format() == "R.r120.s35.p0"
    assert parse_cursor(cursor.format(), 3) == cursor
    cursor.ended = True
    assert parse_cursor(cursor.format(), 3).ended
    assert parse_cursor(None, 2) == parse_cursor("", 2) == RunCursor.start(2)
    for bad in ("R.r1.p0", "R.r1.p0.p0.p0", "Q.p0.p0.p0", "R.z1.p0.p0", "R.p-1.p0.p0", "120", "R.p1e3.p0.p0"):
        with pytest.raises(InvalidCursor):
            parse_cursor(bad, 3)


def job_log(*outputs: str, finished: bool = True) -> list[LogEvent]:
    """A job's events: start, stdout per output, then exit when finished (ids counting bytes, as jobs do)."""
    events, offset = [], 0

    def add(kind: str, payload: dict, size: int = 1) -> None:
        nonlocal offset
        offset += size
        frame, start = encode_json_frame(payload, kind, offset)
        events.append(LogEvent(offset, kind, frame, start))

    add("start", {"type": "start"})
    for text in outputs:
        add("stdout", {"type": "stdout", "out": text}, len(text))
    if finished:
        add("exit", {"type": "exit", "reason": "exited", "code": 0})
    return events


def reader(logs: dict[str, list[LogEvent]], limit: int = 2):
    def read(job: str, after: int) -> LogRead:
        events = [e for e in logs[job] if e.id > after]
        last = logs[job][-1].id
        finished = logs[job][-1].kind == "exit" and len(events) <= limit
        return LogRead(events[:limit], 0, finished, last)
    return read


def drain(run: Run, cursor: RunCursor, read) -> list:
    events = []
    while True:
        frames, more, _ = step(run, cursor, read)
        events += EventStreamParser().feed(b"".join(frames))
        if not more:
            return events


def test_frames_say_each_host_running_then_its_job_then_its_end_and_run_exit_last():
    run = make_run("a", "b")
    logs = {"j1": job_log("x\n", "y\n"), "j2": job_log("z\n")}
    for host, job in zip(run.hosts, ("j1", "j2"), strict=True):
        host.job, host.state = job, "running"
    cursor = RunCursor.start(2)
    live = drain(run, cursor, reader(logs))
    assert [e.type for e in live].count("host_state") == 2 and "run_exit" not in [e.type for e in live]
    for host in run.hosts:
        host.end("succeeded", exit_code=0)
    live += drain(run, cursor, reader(logs))
    per_host = {}
    for event in live:
        data = json.loads(event.data)
        if event.type != "run_exit":
            per_host.setdefault(data["host"], []).append((event.type, data.get("state")))
    assert per_host["a"] == [("host_state", "running"), ("start", None), ("stdout", None), ("stdout", None),
                             ("exit", None), ("host_state", "succeeded")]
    assert live[-1].type == "run_exit" and json.loads(live[-1].data)["state"] == "succeeded"
    wrapped = json.loads(next(e for e in live if e.type == "stdout").data)
    assert wrapped == {"host": "a", "job": "j1", "id": 3, "data": {"type": "stdout", "out": "x\n"}}
    # From every event's id, the rest of the stream: for each host exactly what followed it (a replay may
    # interleave the hosts otherwise than the live stream did), and run_exit last.
    def by_host(events) -> dict:
        hosts: dict = {}
        for event in events:
            hosts.setdefault(json.loads(event.data).get("host"), []).append((event.type, event.data))
        return hosts

    for index, event in enumerate(live):
        rest = drain(run, parse_cursor(event.last_event_id, 2), reader(logs))
        assert by_host(rest) == by_host(live[index + 1:]), index
        assert not rest or rest[-1].type == "run_exit"


def test_a_host_without_a_job_gets_only_its_final_state():
    run = make_run("a")
    run.host("a").end("refused", reason="not allowed here")
    events = drain(run, RunCursor.start(1), reader({}))
    assert [e.type for e in events] == ["host_state", "run_exit"]
    assert json.loads(events[0].data)["reason"] == "not allowed here"


def test_host_tags_are_checked_in_the_config():
    assert load_settings({"SSECMD_HOST_TAGS": "web, eu"}).host_tags == ("web", "eu")
    for bad, words in (("web web", "twice"), ("a/b", "not a tag"), ("x" * 65, "not a tag")):
        with pytest.raises(ConfigError, match=words):
            load_settings({"SSECMD_HOST_TAGS": bad})


def test_a_roles_hosts_limit_what_it_may_target():
    roles = parse_roles({"dbops": {"commands": ["*"], "hosts": ["tag:db", "web-9"]}})
    policy = Policy(roles)
    dba = Principal("dba", ("dbops",), "token")
    assert policy.may_target(dba, "db-1", ["db"]) and policy.may_target(dba, "web-9", [])
    assert not policy.may_target(dba, "web-1", ["web"])
    assert policy.may_target(Principal("root", ("admin",), "token"), "web-1", [])  # default: every host
    assert not policy.may_target(Principal("x", ("admin",), "ticket", ticket_job="j"), "web-1", [])
    for bad in ("web", ["tag:"], ["a b"], [1]):
        with pytest.raises(AccessConfigError, match="hosts"):
            parse_roles({"r": {"hosts": bad}})


def test_a_runs_job_starts_once_per_host_in_a_store_of_one_worker():
    from app.store.memory import MemoryStore

    store = MemoryStore(max_running=1, buffer_bytes=65536, max_finished=10, finished_ttl=60)
    assert store.claim_run_start("r1", "web-1") is None
    assert store.claim_run_start("r1", "web-1") == {"refused": "its start is under way already"}  # not again
    store.record_run_start("r1", "web-1", {"job": "j1"})
    assert store.claim_run_start("r1", "web-1") == {"job": "j1"}
    assert store.claim_run_start("r1", "web-2") is None


def test_a_worker_keeps_its_newest_runs_only():
    from app.store.runs import LocalRuns

    runs = LocalRuns(max_runs=2)
    for n in range(3):
        runs.save(f"r{n}", {"id": f"r{n}"})
    runs.cancels.add("r0")
    runs.save("r1", {"id": "r1", "again": True})  # saved again: the newest now
    runs.save("r3", {"id": "r3"})
    assert list(runs.records) == ["r1", "r3"] and runs.records["r1"]["again"]
