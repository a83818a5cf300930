"""A run's coordinator: the greenlet, in the worker that accepted ``POST /runs``, that starts each target host's
job (within the ``parallel`` window), follows the jobs to their ends, and keeps the run's record in the store.

Each job is started ON its host: this host's own through the service, another's through the store (Redis:
that host's control stream, as cancel and input are routed), so the target's own allowlist, actions and
run-as decide, and it may refuse. A host ``down`` at the start is ``unreachable`` without being asked; a job
whose host dies is marked ``lost`` by the store's liveness sweep (within 10 s), which the coordinator sees as
any other end. Nothing waits without a bound, so a run always ends.

The coordinator goes on as soon as something happens: a job's end (``Store.job_ended``, which every store sets
as a run's job ends, on whichever host) or a start's answer wakes it, so the next host of a ``parallel`` window
starts, and the run ends, at once. It also looks every ``POLL`` seconds whatever happened: for a cancel
requested through another worker, a job marked ``lost``, a notification lost in a store outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import BoundedSemaphore

from ..store.base import Store, StoreUnavailable
from ..store.jobs import Job
from .runstate import LOST, PENDING, REFUSED, RUNNING, UNREACHABLE, HostRun, Run, outcome_of_job

log = logging.getLogger(__name__)

POLL = 0.25  # seconds between looks at the running jobs and the cancel flag when nothing woke the coordinator
START_TIMEOUT = 3.0  # seconds for a target host's worker to take a start request (and again to answer it)


class Coordinator:
    """Runs one run to its end (``run_to_end``, in a greenlet of its own)."""

    def __init__(
        self,
        run: Run,
        store: Store,
        *,
        local_host: str,
        start_local: Callable[[dict[str, Any]], dict[str, Any]],
        host_states: Callable[[], dict[str, str]],
        stop_job: Callable[[str], None],
        record_ttl: float,
        on_change: Callable[[Run], None] = lambda run: None,
        taken_over: Callable[[], bool] = lambda: False,
    ) -> None:
        self.run = run
        self.store = store
        self.local_host = local_host
        self.start_local = start_local
        self.host_states = host_states
        self.stop_job = stop_job
        self.record_ttl = record_ttl
        self.on_change = on_change
        self.taken_over = taken_over  # whether another worker took the run over (it thought this one gone)
        self._saved: dict[str, Any] | None = None
        # The loop and every start greenlet save; one at a time, so an older record never lands after a newer one.
        self._saving = BoundedSemaphore()
        # Hosts that answered busy (the caller's share of running jobs, or their rate, is taken there): asked again
        # once one of this run's hosts has ended, refused if none is left running to free a slot.
        self.busy: dict[str, str] = {}
        self._ended = 0
        self._woken = Event()  # set when a start has been answered: the loop takes another turn at once

    def request_for(self, host: str) -> dict[str, Any]:
        """What a target host is asked: the job part of POST /runs, for whom, and for which run."""
        return {"run": self.run.id, "host": host, "coordinator": self.local_host, **self.run.principal,
                "request": self.run.request}

    def save(self) -> None:
        """The record to the store when it changed (a store outage is retried on the next turn)."""
        with self._saving:
            if self.run.state != "running" and self.run.ended_at is None:
                # Every host has ended (seen while a start's answer was still being saved), but the run not yet:
                # its last save says both at once, so no record (nor a stream's run_exit) lacks its ended_at.
                return
            record = self.run.to_record()  # taken inside the lock: the newest state when this save goes out
            if record == self._saved:
                return
            try:
                self.store.save_run(self.run.id, record, self.record_ttl)
            except StoreUnavailable as exc:
                log.warning("run %s: could not save its record: %s", self.run.id, exc)
                return
            self._saved = record
        self.on_change(self.run)

    def run_to_end(self) -> Run | None:
        """Start, follow and record every host until the run has ended; the ended run, or None if another worker
        took the run over meanwhile (then it ends it)."""
        starting: dict[str, gevent.Greenlet] = {}
        while True:
            self._woken.clear()  # before looking: an answer from now on wakes the wait below
            for name in [name for name, greenlet in starting.items() if greenlet.dead]:
                del starting[name]
            if self._taken_over():
                log.warning("run %s: another worker took it over; leaving it to that one", self.run.id)
                return None
            self._check_cancel()
            ends = self._follow_jobs()
            self._retry_busy(set(starting))
            self.run.skip_rest(set(starting))
            for host in self.run.to_start(set(starting), set(self.busy)):
                starting[host.host] = gevent.spawn(self._start, host)
            if self.run.state != "running" and not starting:
                break
            self.save()
            gevent.wait([*ends, self._woken], timeout=POLL, count=1)
        self.run.ended_at = time.time()
        self.save()
        return self.run

    def _retry_busy(self, starting: set[str]) -> None:
        """Busy hosts are asked again when a host of this run has ended (a slot may be free); with none of this
        run's jobs running or starting, nothing will free one: they are refused, with their host's answer."""
        self.busy = {name: why for name, why in self.busy.items() if self.run.host(name).state == PENDING}
        ended = sum(h.final for h in self.run.hosts)
        if ended > self._ended:
            self._ended = ended
            self.busy.clear()
        elif self.busy and not starting and not any(h.state == RUNNING for h in self.run.hosts):
            for name, why in self.busy.items():
                self.run.host(name).end(REFUSED, reason=why)
            self.busy.clear()

    def _start(self, host: HostRun) -> None:
        """Ask one host to start its job, and note the answer; the loop takes its next turn at once."""
        try:
            self._ask(host)
        finally:
            self._woken.set()

    def _ask(self, host: HostRun) -> None:
        try:
            if host.host == self.local_host:
                answer = self.start_local(self.request_for(host.host))
            elif self.host_states().get(host.host, "down") == "down":
                answer = {"unreachable": f"host {host.host} is down: no heartbeat for a while"}
            else:
                answer = self.store.start_on_host(host.host, self.request_for(host.host), START_TIMEOUT)
        except Exception as exc:  # the store unreachable, or a bug: the host can't take part, the run goes on
            log.warning("run %s: starting on %s failed: %s", self.run.id, host.host, exc)
            answer = {"unreachable": f"could not ask host {host.host}: {exc}"}
        if "job" in answer:
            # The job's own start time, from its host: every reader of the record sees the same one.
            host.job, host.state, host.started_at = answer["job"], RUNNING, answer.get("started_at") or time.time()
            if self.run.cancelled:  # cancelled while it was being started
                self._stop(host.job)
        elif "busy" in answer:
            self.busy[host.host] = str(answer["busy"])
        elif "refused" in answer:
            host.end(REFUSED, reason=str(answer["refused"]))
        else:
            host.end(UNREACHABLE, reason=str(answer.get("unreachable", "no answer")))
        # Saved now, not on the loop's next turn: the run's streams learn the job id (and follow its output from
        # its first event) as soon as it exists, not up to POLL later.
        self.save()

    def _taken_over(self) -> bool:
        try:
            return self.taken_over()
        except StoreUnavailable:
            return False

    def _check_cancel(self) -> None:
        if self.run.cancelled:
            return
        try:
            cancelled = self.store.run_cancel_requested(self.run.id)
        except StoreUnavailable:
            return
        if cancelled:
            self.run.cancelled = True
            for host in self.run.hosts:
                if host.state == RUNNING and host.job:
                    self._stop(host.job)

    def _stop(self, job_id: str) -> None:
        try:
            self.stop_job(job_id)
        except Exception as exc:  # its host is gone: the liveness sweep ends it as lost
            log.warning("run %s: could not stop job %s: %s", self.run.id, job_id, exc)

    def _follow_jobs(self) -> list[Event]:
        """Note the end of every running host's job that has ended; the events set when those still running end
        (taken before their jobs are looked at: an end after the look sets its event)."""
        ends = []
        for host in self.run.hosts:
            if host.state != RUNNING or host.job is None:
                continue
            try:
                ended = self.store.job_ended(host.job)
                job = self.store.get_job(host.job)
            except StoreUnavailable:
                return ends
            if job is None:
                host.end(LOST, reason=f"job {host.job} is no longer kept")
            else:
                self._note(host, job)
            if not host.final:
                ends.append(ended)
        return ends

    @staticmethod
    def _note(host: HostRun, job: Job) -> None:
        if job.finished:
            host.end(outcome_of_job(job.state.value, job.exit_code), reason=job.reason or job.error,
                     exit_code=job.exit_code, ended_at=job.ended_at)
