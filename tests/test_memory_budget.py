"""The worker's memory budget for buffered output: the issue's scenario against a real server, and the policy."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from app.store.budget import MemoryBudget, water_level
from app.store.eventlog import EVENT_OVERHEAD_BYTES, EventLog
from app.streaming.sse import output_json

from .server import wait_until

MiB = 1 << 20
BUDGET = 64 * MiB
# Python, the app, gevent and the allocator's own slack on top of the budget: what the worker
# uses anyway, whatever its jobs print.
FIXED_OVERHEAD = 96 * MiB


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _run_noisy_jobs(client: httpx.Client, count: int, parallel: int) -> list[dict]:
    """``count`` yes jobs, ``parallel`` at a time, each killed after 24 MiB of output; their final records."""
    done: list[dict] = []
    running: list[str] = []
    started = 0
    while len(done) < count:
        while started < count and len(running) < parallel:
            response = client.post("/jobs", json={"argv": ["yes", "a fairly long line of output to fill a buffer"]})
            assert response.status_code == 201, response.text
            running.append(response.json()["id"])
            started += 1
        time.sleep(0.05)
        for job_id in list(running):
            job = client.get(f"/jobs/{job_id}").json()
            if job["state"] not in ("running", "stopping"):  # stopping: killed at its output limit, not yet reaped
                running.remove(job_id)
                done.append(job)
    return done


def test_many_noisy_short_jobs_stay_within_the_memory_budget(make_server):
    srv = make_server({"SSECMD_HISTORY": "false", "SSECMD_MAX_BUFFERED_BYTES": str(BUDGET),
                       "SSECMD_MAX_OUTPUT_BYTES": str(24 * MiB)})
    (worker,) = srv.worker_pids()
    with httpx.Client(base_url=srv.base_url, timeout=30) as client:
        before = _rss(worker)
        jobs = _run_noisy_jobs(client, 24, 4)
        after = _rss(worker)
        health = client.get("/healthz").json()
        # Every job kept its start and exit; a viewer of the oldest is told what it missed.
        oldest = min(jobs, key=lambda job: job["ended_at"])
        body = client.get(f"/jobs/{oldest['id']}/events").text
    output = sum(job["output_bytes"] for job in jobs)
    assert output >= 24 * 24 * MiB  # 576 MiB printed; 16 MiB kept per job would be 384 MiB
    assert all(job["reason"] == "output_limit" for job in jobs)
    assert health["buffered_bytes"] <= BUDGET
    assert after - before < BUDGET + FIXED_OVERHEAD, f"RSS grew by {(after - before) / MiB:.0f} MiB"
    assert "event: start" in body and "event: gap" in body and "event: exit" in body


def test_running_jobs_shrink_to_the_floor_when_nothing_finished_is_left(make_server):
    # Three floods at once in a 4 MiB budget: each running job keeps about a third, and at least 1 MiB.
    srv = make_server({"SSECMD_HISTORY": "false", "SSECMD_MAX_BUFFERED_BYTES": str(4 * MiB),
                       "SSECMD_MAX_RUNNING_JOBS_PER_USER": "8"})
    with httpx.Client(base_url=srv.base_url, timeout=30) as client:
        ids = [client.post("/jobs", json={"argv": ["yes"]}).json()["id"] for _ in range(3)]
        assert wait_until(lambda: all(client.get(f"/jobs/{i}").json()["output_bytes"] > 40 * MiB for i in ids), 60)
        health = client.get("/healthz").json()
        for job_id in ids:
            client.delete(f"/jobs/{job_id}")
    # Three floors (1 MiB each) fit in 4 MiB: the total stays within the budget, give or take one event.
    assert health["buffered_bytes"] <= 4 * MiB + 512 * 1024


# The policy, without a server.


def _fill(log: EventLog, size: int, chunk: int = 64 * 1024) -> None:
    """Append output until the log holds ``size`` bytes, or ``size`` more than it did if it cannot hold that."""
    payload = b"x" * chunk
    appended = 0
    while log.retained_bytes < size and appended < size:
        log.append("stdout", output_json("stdout", payload), payload)
        appended += chunk


def _job(budget: MemoryBudget, cap: int) -> EventLog:
    log = EventLog(cap, budget=budget)
    log.append("start", {"type": "start"})
    return log


def _finish(log: EventLog) -> None:
    log.append("exit", {"type": "exit", "code": 0})


def test_the_budget_counts_what_every_log_keeps():
    budget = MemoryBudget(100 * MiB)
    logs = [_job(budget, 4 * MiB) for _ in range(3)]
    for log in logs:
        _fill(log, 3 * MiB)
    assert budget.used == sum(log.retained_bytes for log in logs)
    logs[0].detach()
    assert budget.used == sum(log.retained_bytes for log in logs[1:])


def test_finished_jobs_shrink_first_oldest_first():
    budget = MemoryBudget(20 * MiB)
    finished = []
    for _ in range(3):
        log = _job(budget, 8 * MiB)
        _fill(log, 6 * MiB)
        _finish(log)
        finished.append(log)
    running = _job(budget, 8 * MiB)
    _fill(running, 6 * MiB)  # 24 MiB in all: 4 MiB too many, plus the reclaim's slack
    assert budget.used <= 20 * MiB
    oldest, middle, newest = finished
    assert oldest.retained_bytes < 2.5 * MiB  # gave the 4 MiB (and the slack) on its own
    assert middle.retained_bytes >= 6 * MiB and newest.retained_bytes >= 6 * MiB
    assert running.retained_bytes >= 6 * MiB  # a running job is not touched while finished ones can give
    _fill(running, 8 * MiB)  # 2 MiB more (and the slack): the oldest gives all it has, then the next
    assert not oldest.can_shrink and middle.retained_bytes < 6 * MiB and newest.retained_bytes >= 6 * MiB
    read = oldest.read_after(0)
    assert [e.kind for e in read.events] == ["start", "exit"] and read.missed == oldest.output_bytes


def test_running_logs_shrink_largest_first_down_to_the_floor():
    budget = MemoryBudget(12 * MiB, floor=1 * MiB)
    big, medium, small = _job(budget, 12 * MiB), _job(budget, 12 * MiB), _job(budget, 12 * MiB)
    _fill(small, 1 * MiB)
    _fill(medium, 5 * MiB)
    _fill(big, 9 * MiB)  # 15 MiB in all
    assert budget.used <= 12 * MiB
    assert small.retained_bytes >= 1 * MiB and medium.retained_bytes >= 5 * MiB  # below the level: untouched
    assert big.retained_bytes <= medium.retained_bytes + 512 * 1024  # the largest was cut, to about the next
    # ... and stays cut: its own bound is lowered for the rest of its run.
    _fill(big, 8 * MiB)
    assert big.retained_bytes <= big.max_bytes < 9 * MiB


def test_no_log_is_shrunk_below_the_floor_even_if_the_budget_stays_exceeded():
    budget = MemoryBudget(2 * MiB, floor=1 * MiB)
    logs = [_job(budget, 4 * MiB) for _ in range(4)]
    for log in logs:
        _fill(log, 3 * MiB)
    # Each event here is 128 KiB (64 KiB of output and its frame): a log at its floor holds 7 of them.
    event = 2 * 64 * 1024 + EVENT_OVERHEAD_BYTES
    assert all(log.max_bytes == 1 * MiB and log.retained_bytes > 1 * MiB - 2 * event for log in logs)
    assert budget.used <= 4 * MiB


def test_reclaiming_is_not_repeated_on_every_append_when_nothing_is_left_to_take():
    budget = MemoryBudget(2 * MiB, floor=1 * MiB)
    logs = [_job(budget, 1 * MiB) for _ in range(4)]
    calls = []
    original = budget.reclaim
    budget.reclaim = lambda: (calls.append(1), original())  # type: ignore[method-assign]
    for log in logs:
        _fill(log, 1 * MiB - 64 * 1024, chunk=1024)
    for _ in range(1000):
        logs[0].append("stdout", output_json("stdout", b"y" * 1024), b"y" * 1024)
    # Each log is at its floor: the budget retries once per sixteenth of itself, not per append.
    assert 0 < len(calls) < 40


def test_a_viewer_behind_a_trimmed_job_is_told_what_it_missed():
    budget = MemoryBudget(4 * MiB, floor=1 * MiB)
    first = _job(budget, 8 * MiB)
    _fill(first, 3 * MiB)
    _finish(first)
    cursor = first.read_after(0).events[1].id  # a viewer that read only the first output event
    second = _job(budget, 8 * MiB)
    _fill(second, 3 * MiB)
    read = first.read_after(cursor)
    assert read.missed > 0 and read.events[-1].kind == "exit"


@pytest.mark.parametrize(
    ("sizes", "excess", "floor", "level"),
    [
        ([10, 6, 2], 4, 1, 6),  # the largest alone down to the next one frees exactly 4
        ([10, 6, 2], 6, 1, 5),  # both largest down to 5
        ([10, 6, 2], 100, 1, 1),  # not enough anywhere: the floor
        ([10], 3, 1, 7),
        ([10, 10, 10], 6, 8, 8),
    ],
)
def test_water_level(sizes, excess, floor, level):
    assert water_level(sizes, excess, floor) == level
