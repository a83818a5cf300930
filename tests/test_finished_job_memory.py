"""A finished job's output is freed as soon as the store lets go of its log, not at a later cyclic collection.

The runner's per-job objects (the run, its greenlets, the output limit's callback) form reference cycles. Its
output pump held the job's log and the pump's pipe watch held the pump, so the whole log (every event's frame
and raw bytes) waited for the cyclic collector's next full pass: with history on, the worker's RSS grew with each
finished 1 MB job (bench/history.py's rss_after_finished_jobs). With the collector off, nothing but reference
counting may free it.
"""

from __future__ import annotations

import gc
import os
import weakref

import gevent

from app.config import Settings
from app.policy.allowlist import Allowlist
from app.process.runner import OutputPump, ProcessRunner
from app.store.eventlog import EventLog
from app.store.memory import MemoryStore


def test_a_finished_jobs_log_is_freed_by_reference_counting_once_forgotten():
    settings = Settings(kill_grace=0.5)
    store = MemoryStore(max_running=10, buffer_bytes=1 << 20, max_finished=10, finished_ttl=60)
    allowlist = Allowlist.resolve(["sh"], search_path=settings.child_path)
    runner = ProcessRunner(settings, store, allowlist, {"PATH": settings.child_path})
    argv = ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x"]
    gc.collect()
    gc.disable()
    try:
        job = store.create_job(argv, 60, "test", owner="test")
        run = runner.start(job, allowlist.resolve_program("sh"))
        assert run.done.wait(30)
        log = weakref.ref(store.local_log(job.id))
        assert log().output_bytes == 300_000
        del run
        for _ in range(20):  # the leader's watcher lets go of the run once its cgroup-less cleanup is over
            gevent.sleep(0.01)
        store._forget(store.get_job(job.id))
        assert log() is None, [type(r).__qualname__ for r in gc.get_referrers(log())]
    finally:
        gc.enable()


def test_a_closed_pipe_watch_lets_go_of_its_pump():
    gc.collect()
    gc.disable()
    try:
        log = EventLog(1 << 20)
        pump = OutputPump(log, Settings(), on_limit=lambda: None)
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        pump.add(read_end, "stdout")
        os.write(write_end, b"hello\n")
        os.close(write_end)
        gevent.spawn(pump.run, ()).join(timeout=10)
        os.close(read_end)
        gone = weakref.ref(pump)
        del pump
        assert gone() is None
    finally:
        gc.enable()
