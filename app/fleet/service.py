"""The fleet part of the façade (issue 20): GET /hosts and the runs API, over the Service's store, policy and
runner. Views call ``Service.fleet``; nothing here knows Flask."""

from __future__ import annotations

import logging
import os
import secrets
import time
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event

from .. import metrics
from ..errors import ApiError
from ..policy.access import Principal
from ..policy.commandline import display_command
from ..policy.jobspec import InvalidRequest, parse_job_request
from ..server import lifecycle
from ..store.base import StoreUnavailable, channel_key
from ..streaming.tracker import TrackedStream
from ..streaming.wire import Wire, watch_for_disconnect
from ..version import VERSION
from .coordinator import Coordinator
from .cursor import InvalidCursor, RunCursor, parse_cursor
from .runstate import RUNNING, HostRun, Run
from .stream import run_events
from .targets import InvalidRun, host_state, parse_options, select_targets, split_run_request

if TYPE_CHECKING:
    from ..service import Service

log = logging.getLogger(__name__)

JOB_FIELDS = ("command", "argv", "action", "params", "timeout", "confirm", "stderr")
DEFAULT_RUNS_LISTED, MAX_RUNS_LISTED = 50, 200  # GET /runs' limit


def _bad(parameter: str, message: str) -> ApiError:
    return ApiError(400, "bad_request", message, extra={"parameter": parameter})


class Fleet:
    """Hosts and runs: what the views ask, decided here, done through the Service's parts."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = service.settings
        self.store = service.store
        self.policy = service.policy
        self.store.set_run_start_handler(self.start_here)
        self.store.set_run_adopter(self.adopt)

    # Hosts.

    def _this_host(self) -> dict[str, Any]:
        try:
            load = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            load = [0.0, 0.0, 0.0]
        return {"name": self.settings.host_name, "tags": list(self.settings.host_tags), "version": VERSION,
                "running_jobs": self.store.running_count(), "load": load, "last_heartbeat": time.time()}

    def hosts(self) -> list[dict[str, Any]]:
        """Every host with its ``state`` (up, stale, down): the registry's, or this host alone."""
        try:
            registered = self.store.list_hosts()
        except StoreUnavailable as exc:
            raise ApiError(503, "store_unavailable", f"the store cannot be reached: {exc}",
                           headers={"Retry-After": "2"}) from None
        if registered is None:
            return [{**self._this_host(), "state": "up"}]
        now = time.time()
        return [{**host, "state": host_state(host["last_heartbeat"], now)} for host in registered]

    def list_hosts(self, principal: Principal) -> list[dict[str, Any]]:
        """GET /hosts: for anyone who may look at jobs (not a stream ticket)."""
        if principal.ticket_job is not None:
            raise ApiError(403, "forbidden", "a stream ticket reads its job only")
        return self.hosts()

    # Runs.

    def create_run(self, body: Any, principal: Principal, addr: str) -> Run:
        """POST /runs: check the request, the targets and the caller's roles, then coordinate it here."""
        try:
            run_fields, job_fields = split_run_request(body)
            parallel, stop_on_failure = parse_options(run_fields)
        except InvalidRun as exc:
            raise _bad(exc.parameter, str(exc)) from None
        try:
            spec = parse_job_request(job_fields, self.settings)
        except InvalidRequest as exc:
            named = [f for f in JOB_FIELDS if f in str(exc)]
            raise _bad(named[0] if named else "body", str(exc)) from None
        if principal.ticket_job is not None or (
            self.policy.role_for_action(principal, spec.action) if spec.action is not None
            else self.policy.role_for_command(principal, spec.argv[0])
        ) is None:
            what = f"action {spec.action!r}" if spec.action is not None else repr(spec.argv[0])
            raise ApiError(403, "forbidden", f"{principal.user} may not run {what}")
        known = {host["name"]: host["tags"] for host in self.hosts()}
        try:
            targets = select_targets(run_fields, known)
        except InvalidRun as exc:
            raise _bad(exc.parameter, str(exc)) from None
        for name in targets:
            if not self.policy.may_target(principal, name, known[name]):
                raise ApiError(403, "forbidden", f"{principal.user} may not run commands on host {name}",
                               extra={"host": name})
        if lifecycle.shutdown_event.is_set():
            raise ApiError(503, "shutting_down", "the server is restarting; try again", headers={"Retry-After": "2"})
        command = display_command(spec.argv) if spec.action is None else f"action {spec.action}"
        run = Run(
            id=secrets.token_hex(8), user=principal.user, command=command, hosts=[HostRun(n) for n in targets],
            parallel=parallel, stop_on_failure=stop_on_failure, request=job_fields,
            coordinator=self.settings.host_name, coordinator_worker=os.getpid(),
            principal={"user": principal.user, "roles": list(principal.roles), "via": principal.via},
        )
        try:
            self.store.save_run(run.id, run.to_record(), self.settings.finished_job_ttl)
        except StoreUnavailable as exc:
            raise ApiError(503, "store_unavailable", f"the store cannot be reached: {exc}",
                           headers={"Retry-After": "2"}) from None
        self.service.audit.record("run_start", run=run.id, user=principal.user, via=principal.via, addr=addr,
                                  hosts=targets, command=command)
        metrics.run_started()
        self._announce(run)
        gevent.spawn(self._coordinate, run)
        return run

    def adopt(self, record: dict[str, Any]) -> None:
        """Coordinate, from where it is, a run whose coordinating worker went away (the store found it)."""
        run = Run.from_record(record)
        log.warning("run %s: its coordinator (pid %s on host %s) went away; coordinating it here", run.id,
                    run.coordinator_worker, run.coordinator)
        run.coordinator, run.coordinator_worker = self.settings.host_name, os.getpid()
        gevent.spawn(self._coordinate, run)

    def _coordinate(self, run: Run) -> None:
        coordinator = Coordinator(
            run, self.store, local_host=self.settings.host_name, start_local=self.start_here,
            host_states=lambda: {h["name"]: h["state"] for h in self.hosts()}, stop_job=self._stop_job,
            record_ttl=self.settings.finished_job_ttl,
            taken_over=partial(self.store.run_taken_over, run.id, run.coordinator, run.coordinator_worker),
        )
        ended = coordinator.run_to_end()
        if ended is None:
            return  # another worker took it over, and ends it
        run = ended
        for host in run.hosts:
            metrics.run_host_finished(host.state)
        self._announce(run)
        self.service.audit.record("run_end", run=run.id, user=run.user, state=run.state,
                                  failed_hosts=run.failed_hosts)

    def _announce(self, run: Run) -> None:
        """The ``jobs`` channel's ``run`` event, at the start and at the end (seen by whoever sees its jobs)."""
        record = {"id": run.id, "state": run.state, "hosts": [h.host for h in run.hosts], "user": run.user,
                  "command": run.command}
        message = {"data": record, "user": run.user, "time": datetime.now(UTC).isoformat(timespec="milliseconds")}
        try:
            self.store.append(channel_key("jobs"), "run", message, audience=run.user)
        except StoreUnavailable as exc:
            log.warning("run %s: could not announce it: %s", run.id, exc)

    def _stop_job(self, job_id: str) -> None:
        """Cancel one of a run's jobs, wherever it runs."""
        runner = self.service.runner
        if job_id in runner.runs:
            runner.stop(job_id, "cancelled")
        else:
            self.store.request_stop(job_id, "cancelled")

    def start_here(self, message: dict[str, Any]) -> dict[str, Any]:
        """Start a run's job on this host, as this host's own config allows: ``{"job": id}``, ``{"refused": why}``,
        or ``{"busy": why}`` when the caller's share of running jobs (or rate) is taken here for now.

        Called for this host by its coordinator, and for another host's coordinator through the store. Once per
        run and host: a coordinator that took over a run (its first went away while asking) gets the first
        answer again, and the command never runs twice."""
        run_id, host = str(message.get("run", "")), self.settings.host_name
        earlier = self.store.claim_run_start(run_id, host)
        if earlier is not None:
            return earlier
        answer = self._start_once(message)
        # A busy answer is not the one start: it is asked again later (and may start then).
        self.store.record_run_start(run_id, host, None if "busy" in answer else answer)
        return answer

    def _start_once(self, message: dict[str, Any]) -> dict[str, Any]:
        settings = self.settings
        principal = Principal(str(message.get("user", "")), tuple(message.get("roles", ())),
                              str(message.get("via", "run")))
        if not self.policy.may_target(principal, settings.host_name, settings.host_tags):
            return {"refused": f"host {settings.host_name}'s roles do not let {principal.user} run commands on it"}
        try:
            spec = parse_job_request(message.get("request", {}), settings)
        except InvalidRequest as exc:
            return {"refused": f"host {settings.host_name}: {exc}"}
        addr = f"run {message.get('run')} from host {message.get('coordinator')}"
        try:
            job = self.service.start_job(spec, principal, addr, origin="runs")
        except ApiError as exc:
            if exc.status == 429:  # the caller's share or rate here: the coordinator asks again as its hosts end
                return {"busy": f"host {settings.host_name}: {exc.message}"}
            return {"refused": f"host {settings.host_name}: {exc.message}"}
        if job.state.value == "failed_to_start":
            return {"refused": f"host {settings.host_name}: {job.error or 'the command failed to start'}"}
        return {"job": job.id, "started_at": job.started_at or job.created_at}

    def _load(self, run_id: str) -> Run | None:
        record = self.store.load_run(run_id)
        return None if record is None else Run.from_record(record)

    def get_run(self, run_id: str, principal: Principal) -> Run:
        """A run whoever could see its jobs may see, or 404."""
        try:
            run = self._load(run_id)
        except StoreUnavailable as exc:
            raise ApiError(503, "store_unavailable", f"the store cannot be reached: {exc}",
                           headers={"Retry-After": "2"}) from None
        if run is None or not self.policy.may_see_job(principal, run.user, ""):
            raise ApiError(404, "run_not_found", f"no run with id {run_id!r}")
        return run

    def list_runs(self, principal: Principal, limit: str | None) -> list[Run]:
        """GET /runs: the newest runs the caller may see (their own; every user's for a role that sees all
        jobs), newest first, at most ``limit`` (1-200, default 50)."""
        if principal.ticket_job is not None:
            raise ApiError(403, "forbidden", "a stream ticket reads its job only")
        if limit is None:
            count = DEFAULT_RUNS_LISTED
        elif limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_RUNS_LISTED:
            count = int(limit)
        else:
            raise _bad("limit", f"limit must be a whole number from 1 to {MAX_RUNS_LISTED}")
        user = None if self.policy.sees_all_jobs(principal) else principal.user
        try:
            records = self.store.list_runs(count, user)
        except StoreUnavailable as exc:
            raise ApiError(503, "store_unavailable", f"the store cannot be reached: {exc}",
                           headers={"Retry-After": "2"}) from None
        return [Run.from_record(record) for record in records]

    def cancel_run(self, run_id: str, principal: Principal, addr: str) -> Run:
        """DELETE /runs/<id>: no more hosts start, running jobs are cancelled; the run after up to kill_grace + 1 s."""
        run = self.get_run(run_id, principal)
        if not self.policy.may_cancel_job(principal, run.user):
            raise ApiError(403, "forbidden", f"{principal.user} may not cancel run {run_id}")
        if run.state != "running":
            return run
        self.store.request_run_cancel(run.id)
        for host in run.hosts:
            if host.state == RUNNING and host.job:
                self._stop_job(host.job)
        self.service.audit.record("run_cancel", run=run.id, user=principal.user, addr=addr)
        deadline = time.monotonic() + self.settings.kill_grace + 1.0
        while run.state == "running" and time.monotonic() < deadline:
            gevent.sleep(0.1)
            run = self._load(run_id) or run
        return run

    @staticmethod
    def cursor_of(run: Run, last_event_id: str | None) -> RunCursor:
        """Where a stream of ``run`` resumes from a Last-Event-ID; 400 if it is not one of this run's."""
        try:
            return parse_cursor(last_event_id, len(run.hosts))
        except InvalidCursor as exc:
            raise ApiError(400, "bad_request", str(exc), extra={"parameter": "Last-Event-ID"}) from None

    def open_run_stream(self, run: Run, last_event_id: str | None, wire: Wire, label: str) -> TrackedStream | None:
        """Every host's events of a run (from ``get_run``) on one stream, from ``last_event_id``; None (204)
        after ``run_exit``."""
        cursor = self.cursor_of(run, last_event_id)
        if cursor.ended:
            return None
        gone = Event()
        watcher = watch_for_disconnect(wire.sock, gone.set)

        def closed() -> None:
            if watcher is not None:
                watcher.kill(block=False)

        frames = run_events(self.store, run.id, lambda: self._load(run.id), cursor, self.settings,
                            lifecycle.shutdown_event, gone)
        return self.service.tracker.guard(frames, label, [closed], kind="fleet")
