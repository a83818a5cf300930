"""The run coordinator (app/fleet/coordinator.py) against a fake store: the window, stop_on_failure, refusals,
unreachable and lost hosts, a cancel while a start is under way, waking at a job's end rather than on its poll.
Greenlets, no servers."""

from __future__ import annotations

import itertools
import time

import gevent
import pytest

from app.fleet import coordinator as coordinator_module
from app.fleet.coordinator import Coordinator
from app.fleet.runstate import HostRun, Run
from app.states import JobState
from app.store.jobs import Job
from app.store.runs import RunChanges


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(coordinator_module, "POLL", 0.01)


class FakeStore:
    """What the coordinator uses of a store: run records, the cancel flag, jobs, and starts on other hosts."""

    def __init__(self, answers: dict[str, dict]) -> None:
        self.answers = answers  # host -> what its start answers; "job" answers start a job that runs until ended
        self.jobs: dict[str, Job] = {}
        self.saved: list[dict] = []
        self.cancelled = False
        self.stopped: list[str] = []
        self.ids = (f"{n:016x}" for n in itertools.count(1))
        self.started: list[str] = []
        self.ends = RunChanges()  # Store.job_ended's events, as the real stores keep them

    def start(self, host: str) -> dict:
        answer = self.answers[host]
        if answer != "job":
            return answer
        job = Job(id=next(self.ids), argv=("true",), timeout=60, origin="runs")
        self.jobs[job.id] = job
        self.started.append(host)
        return {"job": job.id}

    def start_on_host(self, host: str, request: dict, timeout: float) -> dict:
        return self.start(host)

    def end(self, host_index: int, run: Run, state: JobState = JobState.EXITED, code: int | None = 0) -> None:
        job = self.jobs[run.hosts[host_index].job]
        job.state, job.exit_code = state, code
        self.ends.changed(job.id)

    def job_ended(self, job_id: str):
        return self.ends.event(job_id)

    def save_run(self, run_id: str, record: dict, ttl: float) -> None:
        self.saved.append(record)

    def run_cancel_requested(self, run_id: str) -> bool:
        return self.cancelled

    def get_job(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)


def coordinate(store: FakeStore, names: list[str], *, parallel=None, stop=False, states=None):
    run = Run(id="0" * 16, user="alice", command="true", hosts=[HostRun(n) for n in names], parallel=parallel,
              stop_on_failure=stop)
    coordinator = Coordinator(
        run, store, local_host="here", start_local=lambda request: store.start(request["host"]),
        host_states=lambda: states or {}, stop_job=store.stopped.append, record_ttl=60,
    )
    return run, gevent.spawn(coordinator.run_to_end)


def settle() -> None:
    gevent.sleep(0.1)


def test_parallel_1_starts_the_next_host_only_when_one_ends():
    store = FakeStore({"here": "job", "b": "job", "c": "job"})
    run, greenlet = coordinate(store, ["here", "b", "c"], parallel=1, states={"b": "up", "c": "up"})
    for index in range(3):
        settle()
        assert store.started == ["here", "b", "c"][:index + 1]
        store.end(index, run)
    assert greenlet.get(timeout=5).state == "succeeded" and store.saved[-1]["ended_at"] is not None


def test_stop_on_failure_skips_the_rest_and_refused_and_down_hosts_end_at_once():
    store = FakeStore({"here": "job", "b": {"refused": "b: not allowed"}, "c": "job", "d": "job"})
    run, greenlet = coordinate(store, ["here", "b", "c", "d"], parallel=1, stop=True,
                               states={"b": "up", "c": "down", "d": "up"})
    settle()
    store.end(0, run)
    final = greenlet.get(timeout=5)
    assert [h.state for h in final.hosts] == ["succeeded", "refused", "skipped", "skipped"]
    assert final.hosts[1].reason == "b: not allowed" and store.started == ["here"]


def test_a_down_host_is_unreachable_without_being_asked_and_a_forgotten_job_is_lost():
    store = FakeStore({"here": "job", "c": "job"})
    run, greenlet = coordinate(store, ["here", "c"], states={"c": "down"})
    settle()
    del store.jobs[run.hosts[0].job]  # its host went away with its record
    final = greenlet.get(timeout=5)
    assert [h.state for h in final.hosts] == ["lost", "unreachable"] and store.started == ["here"]
    assert final.state == "failed" and "down" in final.hosts[1].reason


def test_a_lost_job_and_a_failed_one_end_the_run_partial():
    store = FakeStore({"here": "job", "b": "job", "c": "job"})
    run, greenlet = coordinate(store, ["here", "b", "c"], states={"b": "up", "c": "up"})
    settle()
    store.end(0, run)
    store.end(1, run, JobState.LOST, None)
    store.end(2, run, JobState.EXITED, 3)
    final = greenlet.get(timeout=5)
    assert [(h.state, h.exit_code) for h in final.hosts] == [("succeeded", 0), ("lost", None), ("failed", 3)]
    assert (final.state, final.failed_hosts) == ("partial", ["b", "c"])


def test_a_cancel_stops_the_running_jobs_and_skips_the_pending_hosts():
    store = FakeStore({"here": "job", "b": "job", "c": "job"})
    run, greenlet = coordinate(store, ["here", "b", "c"], parallel=2, states={"b": "up", "c": "up"})
    settle()
    store.cancelled = True
    settle()
    assert sorted(store.stopped) == sorted(h.job for h in run.hosts[:2])
    store.end(0, run, JobState.CANCELLED, None)
    store.end(1, run, JobState.CANCELLED, None)
    final = greenlet.get(timeout=5)
    assert (final.state, [h.state for h in final.hosts]) == ("cancelled", ["cancelled", "cancelled", "skipped"])


def test_a_job_started_while_the_run_was_being_cancelled_is_stopped():
    store = FakeStore({"here": "job"})
    slow_start = store.start

    def start_slowly(request):
        gevent.sleep(0.1)  # the cancel arrives meanwhile
        return slow_start(request["host"])

    run = Run(id="0" * 16, user="alice", command="true", hosts=[HostRun("here")])
    coordinator = Coordinator(run, store, local_host="here", start_local=start_slowly, host_states=dict,
                              stop_job=store.stopped.append, record_ttl=60)
    greenlet = gevent.spawn(coordinator.run_to_end)
    gevent.sleep(0.03)
    store.cancelled = True
    gevent.sleep(0.2)
    assert store.stopped == [run.hosts[0].job]
    store.end(0, run, JobState.CANCELLED, None)
    assert greenlet.get(timeout=5).state == "cancelled"


def test_a_start_that_raises_makes_the_host_unreachable_and_the_run_goes_on():
    store = FakeStore({"here": "job"})

    def broken(host: str, request: dict, timeout: float) -> dict:
        raise ConnectionError("the store went away")

    store.start_on_host = broken
    run, greenlet = coordinate(store, ["here", "b"], states={"b": "up"})
    settle()
    store.end(0, run)
    final = greenlet.get(timeout=5)
    assert [h.state for h in final.hosts] == ["succeeded", "unreachable"]
    assert "the store went away" in final.hosts[1].reason


def test_a_coordinator_whose_run_was_taken_over_leaves_it_alone():
    store = FakeStore({"here": "job", "b": "job"})
    taken = []
    run = Run(id="0" * 16, user="alice", command="true", hosts=[HostRun("here"), HostRun("b")], parallel=1)
    coordinator = Coordinator(run, store, local_host="here", start_local=lambda request: store.start("here"),
                              host_states=dict, stop_job=store.stopped.append, record_ttl=60,
                              taken_over=lambda: bool(taken))
    greenlet = gevent.spawn(coordinator.run_to_end)
    settle()
    taken.append(True)
    store.end(0, run)
    assert greenlet.get(timeout=5) is None
    assert store.started == ["here"] and store.saved[-1]["state"] == "running"  # the other worker goes on


def test_a_busy_host_is_asked_again_when_one_of_the_runs_hosts_ends_and_refused_when_none_is_left():
    # "b" is busy (the caller's share of running jobs there is taken) until "here" has ended.
    store = FakeStore({"here": "job", "b": {"busy": "b: alice runs too many jobs"}, "c": "job"})
    run, greenlet = coordinate(store, ["here", "b", "c"], states={"b": "up", "c": "up"})
    settle()
    assert [h.state for h in run.hosts] == ["running", "pending", "running"]
    store.answers["b"] = "job"
    store.end(0, run)
    settle()
    assert [h.state for h in run.hosts] == ["succeeded", "running", "running"]
    store.end(1, run)
    store.end(2, run)
    assert greenlet.get(timeout=5).state == "succeeded"


def test_a_host_still_busy_when_nothing_of_the_run_runs_is_refused_with_its_answer():
    store = FakeStore({"here": "job", "b": {"busy": "b: alice runs too many jobs"}})
    run, greenlet = coordinate(store, ["here", "b"], parallel=1, states={"b": "up"})
    settle()
    store.end(0, run)
    final = greenlet.get(timeout=5)
    assert [h.state for h in final.hosts] == ["succeeded", "refused"]
    assert final.hosts[1].reason == "b: alice runs too many jobs"


def test_a_jobs_end_starts_the_next_host_of_the_window_and_ends_the_run_at_once_not_on_the_next_poll(monkeypatch):
    monkeypatch.setattr(coordinator_module, "POLL", 30.0)  # the poll is only a fallback now
    store = FakeStore({"here": "job", "b": "job"})
    run, greenlet = coordinate(store, ["here", "b"], parallel=1, states={"b": "up"})
    gevent.sleep(0.05)
    assert store.started == ["here"]
    ended = time.monotonic()
    store.end(0, run)
    while store.started == ["here"] and time.monotonic() - ended < 5:
        gevent.sleep(0.005)
    assert store.started == ["here", "b"] and time.monotonic() - ended < 0.5
    ended = time.monotonic()
    store.end(1, run)
    assert greenlet.get(timeout=5).state == "succeeded" and time.monotonic() - ended < 0.5


def test_a_refusal_starts_the_next_host_of_the_window_at_once_not_on_the_next_poll(monkeypatch):
    monkeypatch.setattr(coordinator_module, "POLL", 30.0)
    store = FakeStore({"b": {"refused": "b: not allowed"}, "here": "job"})
    run, greenlet = coordinate(store, ["b", "here"], parallel=1, states={"b": "up"})
    gevent.sleep(0.2)
    assert store.started == ["here"] and run.hosts[0].state == "refused"
    store.end(1, run)
    assert greenlet.get(timeout=5).state == "partial"


def test_no_record_says_the_run_ended_before_it_has_its_end_time():
    # Jobs that end before their starts' answers are saved (a save takes a while, as over the network): the loop
    # may see every host ended while a start's greenlet is still saving. No record may say the run ended (a
    # stream then sends run_exit) without its ended_at: only the last save, which sets it, says so.
    class SlowSaves(FakeStore):
        def start(self, host):
            answer = super().start(host)
            self.jobs[answer["job"]].state, self.jobs[answer["job"]].exit_code = JobState.EXITED, 0
            return answer

        def save_run(self, run_id, record, ttl):
            gevent.sleep(0.02)
            super().save_run(run_id, record, ttl)

    for _ in range(5):
        store = SlowSaves({"here": "job", "b": "job", "c": "job"})
        _, greenlet = coordinate(store, ["here", "b", "c"], states={"b": "up", "c": "up"})
        assert greenlet.get(timeout=5).state == "succeeded"
        ended = [record for record in store.saved if record["state"] != "running"]
        assert ended and all(record["ended_at"] is not None for record in ended), ended
