"""ProcessRunner in-process: the window between the spawn and the exec, and a job's cgroup.

A child is held before its exec by freezing the cgroup its job's cgroup is
made in: it stops the moment it joins (tests/cgroup_support.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import gevent
import pytest

from app.config import Settings
from app.policy.allowlist import Allowlist
from app.process import runner as runner_module
from app.process.cgroups import CgroupPlan, WorkerCgroups
from app.process.runner import ProcessRunner
from app.states import JobState
from app.store.base import job_key
from app.store.memory import MemoryStore
from tests import cgroup_support
from tests.server import children_of

SETTINGS = Settings(kill_grace=0.5)

pytestmark = pytest.mark.skipif(cgroup_support.skip_reason() is not None, reason=str(cgroup_support.skip_reason()))


def _runner(base: Path | None = None, settings: Settings = SETTINGS) -> ProcessRunner:
    store = MemoryStore(max_running=10, buffer_bytes=1 << 20, max_finished=10, finished_ttl=60)
    allowlist = Allowlist.resolve(["sleep", "echo", "sh"], search_path=settings.child_path)
    cgroups = WorkerCgroups(CgroupPlan("cgroup", "mount", str(base)), os.getpid()) if base else None
    return ProcessRunner(settings, store, allowlist, {"PATH": settings.child_path}, cgroups=cgroups)


def _frozen_runner(base: Path, settings: Settings = SETTINGS) -> ProcessRunner:
    """A runner whose jobs' children all stop as they join their cgroups."""
    runner = _runner(base, settings)
    worker = Path(runner.cgroups.dir)  # made here, frozen, before the runner makes job cgroups in it
    worker.mkdir()
    (worker / "cgroup.freeze").write_text("1")
    return runner


def _events(runner: ProcessRunner, job_id: str) -> list[tuple[str, dict]]:
    events = runner.store.read(job_key(job_id), 0, limit=100).events
    return [(event.kind, json.loads(event.data)) for event in events]


def _start(runner: ProcessRunner, argv: list[str], timeout: float = 60):
    job = runner.store.create_job(argv, timeout, "test", owner="test")
    return job, runner.start(job, runner.allowlist.resolve_program(argv[0]))


@pytest.fixture
def short_start_wait(monkeypatch):
    monkeypatch.setattr(runner_module, "START_WAIT", 0.2)


def test_a_job_hanging_before_its_exec_times_out_counting_from_its_spawn(short_start_wait):
    with cgroup_support.scratch_cgroup() as base:
        runner = _frozen_runner(base)
        started = time.monotonic()
        job, run = _start(runner, ["sleep", "30"], timeout=0.5)
        assert job.state == JobState.RUNNING and job.pid is None  # start() did not wait for the exec
        assert run.done.wait(timeout=10)
        # The timeout (0.5 s), SIGTERM (blocked until an exec that never comes), SIGKILL after kill_grace.
        assert time.monotonic() - started < 3
        final = runner.store.get_job(job.id)
        assert final.state == JobState.TIMED_OUT and final.reason == "timeout"
        assert final.signal_name == "SIGKILL"
        assert "stuck trying to join its cgroup" in final.error
        assert [kind for kind, _ in _events(runner, job.id)][-1] == "exit"
        assert job.id not in runner.runs


def test_a_stop_while_the_child_prepares_is_not_lost(short_start_wait):
    with cgroup_support.scratch_cgroup() as base:
        runner = _frozen_runner(base)
        job, run = _start(runner, ["sleep", "30"])
        assert runner.stop(job.id, "cancelled")
        assert runner.store.get_job(job.id).state == JobState.STOPPING
        assert run.done.wait(timeout=10)
        final = runner.store.get_job(job.id)
        assert final.state == JobState.CANCELLED and final.reason == "cancelled"
        assert job.id not in runner.runs


def test_stop_all_while_jobs_start_stops_every_one(short_start_wait):
    with cgroup_support.scratch_cgroup() as base:
        runner = _frozen_runner(base)
        runs = [_start(runner, ["sleep", "30"])[1] for _ in range(5)]
        runner.stop_all("shutdown")
        runner.wait_all(timeout=10)
        assert not runner.runs
        assert [run.job.state for run in runs] == [JobState.CANCELLED] * 5


def test_the_requester_going_away_leaves_the_job_to_the_runner(short_start_wait):
    # Killing the greenlet that asked for the job (a request, say) neither loses nor leaks the job.
    with cgroup_support.scratch_cgroup() as base:
        runner = _frozen_runner(base)
        children_before = set(children_of(os.getpid()))
        job = runner.store.create_job(["sleep", "30"], 60, "test", owner="test")
        requester = gevent.spawn(runner.start, job, runner.allowlist.resolve_program("sleep"))
        gevent.sleep(0.05)  # in start(), waiting for the exec
        requester.kill()
        assert job.id in runner.runs and not job.finished
        assert runner.stop(job.id, "cancelled")
        assert runner.runs.get(job.id) is None or runner.runs[job.id].done.wait(timeout=10)
        assert runner.store.get_job(job.id).state == JobState.CANCELLED
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and set(children_of(os.getpid())) - children_before:
            gevent.sleep(0.05)
        assert set(children_of(os.getpid())) - children_before == set()


def test_a_start_that_fails_at_the_exec_is_recorded_and_not_left_listed():
    runner = _runner()
    job = runner.store.create_job(["echo", "hi"], 60, "test", owner="test")
    run = runner.start(job, "/nonexistent/echo")
    assert run.done.is_set() and job.id not in runner.runs
    finished = runner.store.get_job(job.id)
    assert finished.state == JobState.FAILED_TO_START
    events = _events(runner, job.id)
    assert [kind for kind, _ in events] == ["err"]
    assert events[0][1]["errno"] == 2


def test_a_job_whose_cgroup_cannot_be_made_fails_to_start(tmp_path):
    runner = _runner(tmp_path / "no-such-cgroup")
    job, run = _start(runner, ["echo", "hi"])
    assert run.done.is_set() and job.id not in runner.runs
    finished = runner.store.get_job(job.id)
    assert finished.state == JobState.FAILED_TO_START and finished.reason == "spawn_failed"
    assert "cannot make its cgroup" in finished.error


def test_a_job_runs_in_its_own_cgroup_which_is_removed_after_it():
    with cgroup_support.scratch_cgroup() as base:
        runner = _runner(base)
        busy = "grep ^0:: /proc/self/cgroup; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"
        job, run = _start(runner, ["sh", "-c", busy])
        assert run.done.wait(timeout=30)
        events = _events(runner, job.id)
        output = "".join(payload["out"] for kind, payload in events if kind == "stdout")
        assert output == f"0::/{base.name}/worker-{os.getpid()}/job-{job.id}\n"
        exit_payload = events[-1][1]
        assert exit_payload["reason"] == "exited" and exit_payload["code"] == 0
        assert exit_payload["cpu_seconds"] > 0.05  # the loop's CPU time, from the cgroup's cpu.stat
        assert runner.store.get_job(job.id).cpu_seconds == exit_payload["cpu_seconds"]
        cgroup = base / f"worker-{os.getpid()}" / f"job-{job.id}"
        deadline = time.monotonic() + 10
        while cgroup.exists() and time.monotonic() < deadline:
            gevent.sleep(0.05)
        assert not cgroup.exists()


def test_the_leader_s_exit_ends_what_it_left_in_its_cgroup_setsid_or_not():
    script = "setsid sleep 300 & sleep 300 & echo started"
    with cgroup_support.scratch_cgroup() as base:
        runner = _runner(base)
        job, run = _start(runner, ["sh", "-c", script])
        assert run.done.wait(timeout=10)
        final = runner.store.get_job(job.id)
        assert final.state == JobState.EXITED and final.exit_code == 0
        cgroup = base / f"worker-{os.getpid()}" / f"job-{job.id}"
        assert not cgroup.exists() or not cgroup_support.members(cgroup)


def test_killing_a_child_before_its_exec_goes_through_its_pidfd_not_a_pid(short_start_wait):
    # A stop before the exec signals the launch itself: nothing is sent to a pid that may be reused.
    with cgroup_support.scratch_cgroup() as base:
        runner = _frozen_runner(base)
        job, run = _start(runner, ["sleep", "30"])
        sent = []
        original = run.procs.starting.kill
        run.procs.starting.kill = lambda sig: sent.append(sig) or original(sig)
        runner.stop(job.id, "cancelled")
        assert run.done.wait(timeout=10)
        assert sent == [signal.SIGTERM, signal.SIGKILL]
