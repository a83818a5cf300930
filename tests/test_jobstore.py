"""MemoryStore's job registry: the running count and the pruning of finished jobs."""

from __future__ import annotations

import pytest

from app.states import JobState
from app.store.base import TooManyJobs
from app.store.memory import MemoryStore


def _store(**overrides) -> MemoryStore:
    settings = {"max_running": 3, "buffer_bytes": 1 << 20, "max_finished": 2, "finished_ttl": 100.0}
    settings.update(overrides)
    return MemoryStore(**settings)


def _finish(store: MemoryStore, job_id: str, ended_at: float | None = None) -> None:
    fields = {"state": JobState.EXITED, "reason": "exited"}
    if ended_at is not None:
        fields["ended_at"] = ended_at
    store.finish_job(job_id, **fields)


def test_running_count_follows_create_and_finish():
    store = _store()
    jobs = [store.create_job(["echo"], 10, "jobs", owner="anonymous") for _ in range(3)]
    assert store.running_count() == 3
    with pytest.raises(TooManyJobs):
        store.create_job(["echo"], 10, "jobs", owner="anonymous")
    _finish(store, jobs[1].id)
    assert store.running_count() == 2
    _finish(store, jobs[1].id)  # a second finish changes nothing
    assert store.running_count() == 2
    store.create_job(["echo"], 10, "jobs", owner="anonymous")
    assert store.running_count() == 3


def test_the_oldest_finished_are_forgotten_beyond_the_count_limit():
    store = _store(max_running=10)
    jobs = [store.create_job(["echo"], 10, "jobs", owner="anonymous") for _ in range(5)]
    for job in jobs[:4]:
        _finish(store, job.id)
    store.prune()
    kept = {job.id for job in store.list_jobs()}
    assert kept == {jobs[2].id, jobs[3].id, jobs[4].id}  # two finished (the newest) and the running one
    assert store.get_job(jobs[0].id) is None and store.get_job(jobs[4].id) is jobs[4]
    assert store.running_count() == 1


def test_finished_jobs_older_than_the_ttl_are_forgotten():
    store = _store(max_running=10, max_finished=100, finished_ttl=10.0)
    old, new, running = (store.create_job(["echo"], 10, "jobs", owner="anonymous") for _ in range(3))
    _finish(store, old.id, ended_at=1000.0)
    _finish(store, new.id, ended_at=1009.0)
    store.prune(now=1010.5)
    assert set(store._jobs) == {new.id, running.id}  # list() and get() would prune by the real clock
    store.prune(now=1019.5)
    assert set(store._jobs) == {running.id}  # running jobs are never pruned
    assert store.running_count() == 1


def test_get_forgets_an_expired_job_and_the_bookkeeping_follows():
    store = _store(max_running=10, max_finished=100, finished_ttl=0.0)
    job = store.create_job(["echo"], 10, "jobs", owner="anonymous")
    _finish(store, job.id, ended_at=1.0)
    assert store.get_job(job.id) is None
    store.prune()
    assert store.list_jobs() == [] and store.running_count() == 0
