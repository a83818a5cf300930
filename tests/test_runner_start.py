"""ProcessRunner.start in-process: the window between the clone and the exec, when the starting greenlet waits."""

from __future__ import annotations

import json
import os
import time

import gevent

from app.allowlist import Allowlist
from app.config import Settings
from app.jobs import JobState, MemoryJobStore
from app.runner import ProcessRunner
from tests.server import children_of

SETTINGS = Settings(kill_grace=1.0)


def _runner() -> ProcessRunner:
    store = MemoryJobStore(max_running=10, buffer_bytes=1 << 20, max_finished=10, finished_ttl=60)
    allowlist = Allowlist.resolve(["sleep", "echo"], search_path=SETTINGS.child_path)
    return ProcessRunner(SETTINGS, store, allowlist, {"PATH": SETTINGS.child_path})


def _kinds(runner: ProcessRunner, job_id: str) -> list[str]:
    return [event.kind for event in runner.store.log(job_id).read_after(0, limit=100).events]


def test_a_stop_while_the_child_execs_is_not_lost():
    # The stop runs while start() waits for the exec; the job must still be stopped once it runs.
    runner = _runner()
    job = runner.store.create(["sleep", "30"], 60, "test")
    stopped = []
    gevent.get_hub().loop.run_callback(lambda: stopped.append(runner.stop(job.id, "cancelled")))
    run = runner.start(job, runner.allowlist.resolve_program("sleep"))
    assert stopped == [True]
    assert run.done.wait(timeout=10)
    finished = runner.store.get(job.id)
    assert finished.state == JobState.CANCELLED and finished.reason == "cancelled"
    assert _kinds(runner, job.id) == ["start", "exit"]
    assert job.id not in runner.runs


def test_stop_all_while_jobs_exec_stops_every_one():
    runner = _runner()
    jobs = [runner.store.create(["sleep", "30"], 60, "test") for _ in range(5)]
    starting = [gevent.spawn(runner.start, job, runner.allowlist.resolve_program("sleep")) for job in jobs]
    stopper = gevent.spawn(runner.stop_all, "shutdown")  # runs once every start() waits for its exec
    gevent.joinall([*starting, stopper], timeout=10, raise_error=True)
    assert all(run.proc is not None for run in (greenlet.value for greenlet in starting))
    runner.wait_all(timeout=10)
    assert not runner.runs
    for job in jobs:
        assert runner.store.get(job.id).state == JobState.CANCELLED


def test_a_start_that_fails_at_the_exec_is_recorded_and_not_left_listed():
    runner = _runner()
    job = runner.store.create(["echo", "hi"], 60, "test")
    run = runner.start(job, "/nonexistent/echo")
    assert run.done.is_set() and job.id not in runner.runs
    finished = runner.store.get(job.id)
    assert finished.state == JobState.FAILED_TO_START
    events = runner.store.log(job.id).read_after(0, limit=100).events
    assert [event.kind for event in events] == ["err"]
    assert json.loads(events[0].frame.split(b"data: ", 1)[1])["errno"] == 2


def test_a_start_killed_while_the_child_execs_finishes_the_job_and_kills_the_child():
    runner = _runner()
    children_before = set(children_of(os.getpid()))
    job = runner.store.create(["sleep", "30"], 60, "test")
    starting = gevent.spawn(runner.start, job, runner.allowlist.resolve_program("sleep"))
    gevent.sleep(0)  # into spawn(), waiting for the exec
    starting.kill()
    assert isinstance(starting.value, gevent.GreenletExit)
    assert job.id not in runner.runs
    finished = runner.store.get(job.id)
    assert finished.state == JobState.FAILED_TO_START
    assert _kinds(runner, job.id) == ["err"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and set(children_of(os.getpid())) - children_before:
        gevent.sleep(0.05)
    assert set(children_of(os.getpid())) - children_before == set()
