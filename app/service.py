"""The façade: everything the HTTP layer may ask of the service, with no Flask inside.

Views parse the request (http/web.py), then call a ``Service`` method with
explicit arguments: the principal, the client's address, the parsed input,
and for streams the client's ``Wire``. The service decides who may do what
(policy/), starts and stops jobs (process/), keeps them and their logs in
the store (store/), and opens event streams (streaming/). It refuses with
``ApiError``. No view touches the store, the runner or the streams itself.

One ``Service`` per app (per worker): it wires settings, store, policy,
runner and streams once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from socket import socket
from typing import Any

import gevent

from . import logs, metrics
from .config import Settings
from .errors import ApiError
from .fleet.service import Fleet
from .policy.access import Credential, Policy, Principal
from .policy.allowlist import Allowlist, CommandNotAllowed
from .policy.audit import AuditLog, RepeatCollapser, capped
from .policy.forwarding import TrustedProxies
from .policy.jobspec import JobSpec
from .policy.messages import InvalidMessage, Message, check_channel_name
from .policy.ratelimit import retry_after_header
from .policy.signing import Signer
from .process import cgroups
from .process.childenv import child_environment
from .process.pgroups import ProcessGroupRegistry, default_run_dir
from .process.runner import Containment, NoInput, ProcessRunner
from .server import capacity, lifecycle, stats
from .store.base import (
    START,
    InputReply,
    LogEvent,
    Position,
    Store,
    Subscription,
    TooManyChannels,
    TooManyJobs,
    UnknownLog,
    channel_key,
    job_key,
)
from .store.factory import make_store
from .store.jobs import Job
from .store.query import QUERY_PARAMETERS, InvalidQuery, JobPage, page_jobs, parse_job_query
from .streaming.delivery import DirectDelivery
from .streaming.multiplex import InvalidCursor, parse_composite
from .streaming.output import job_output_stream
from .streaming.response import EventStreams, Source
from .streaming.tracker import StreamTracker, TrackedStream
from .streaming.wire import Wire

log = logging.getLogger(__name__)

JOBS_CHANNEL = "jobs"
INPUT_ROUTE_TIMEOUT = 2.0  # seconds to wait for the worker running a job to answer input routed to it


class Service:
    """Everything a view needs to start, find and stop jobs, publish and stream, and to decide who may."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.allowlist = Allowlist.resolve(
            settings.allowed_commands,
            search_path=settings.child_path,
            allow_any=settings.allow_any_command,
        )
        if settings.allow_any_command:
            log.warning("allow_any_command is on: any executable on %s may run", settings.child_path)
        self.policy = Policy(settings.roles)
        self.signer = Signer(settings.session_secret or secrets.token_urlsafe(32), settings.session_ttl,
                             settings.ticket_ttl)
        self.audit = AuditLog(settings.audit_log, json_lines=settings.log_format == "json")
        # Refused requests from one address: one line each interval, then a count (a flood of 401s
        # must not become a flood of log lines).
        self.refusals = RepeatCollapser(settings.refused_log_interval)
        if self.audit.enabled and settings.refused_log_interval:
            gevent.spawn(self._report_repeated_refusals)
        self.metrics_peers = TrustedProxies(settings.metrics_allow, "metrics_allow")
        self.store = store if store is not None else make_store(settings)
        # This worker's own buckets, or with a shared store every worker's and host's.
        self.rate_limiter = self.store.rate_limiter("jobs", settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.publish_limiter = self.store.rate_limiter(
            "publish", settings.publish_rate_per_minute, settings.publish_rate_burst)
        self.login_limiter = self.store.rate_limiter(
            "login", settings.login_attempts_per_minute, settings.login_attempts_per_minute)
        self.containment_plan = _containment_plan(settings)
        log.info("%s", self.containment_plan.describe())
        job_cgroups = registry = None
        if self.containment_plan.uses_cgroups:
            job_cgroups = cgroups.WorkerCgroups(
                self.containment_plan, os.getpid(), settings.job_memory_max, settings.job_pids_max
            )
        else:  # what the master kills if this worker dies (with cgroups it kills the worker's cgroups)
            registry = ProcessGroupRegistry(settings.run_dir or default_run_dir(), os.getpid())
        containment = Containment.from_settings(settings)
        _warn_if_ping_cannot_work(settings, containment, self.allowlist)
        self.runner = ProcessRunner(
            settings,
            self.store,
            self.allowlist,
            child_environment(settings, os.environ),
            registry,
            containment,
            on_finish=self._job_finished,
            cgroups=job_cgroups,
        )
        shutdown = lifecycle.shutdown_event
        self.tracker = StreamTracker(settings.send_timeout)
        delivery = DirectDelivery(shutdown)
        self.store.set_listener(delivery)
        self.store.set_stop_handler(self.runner.stop)
        self.store.set_input_handler(self._input_here)
        self.streams = EventStreams(self.store, delivery, self.tracker, settings, shutdown)
        # This worker's own limit: the settings, within what its open-files limit and gunicorn's pool carry.
        self.capacity = capacity.plan_capacity(settings, capacity.current_nofile(), capacity.worker_pool)
        self.stats_publisher = stats.run_stats_publisher(
            settings.stats_interval,
            lambda: self.store.subscribers("stats") > 0,
            lambda snapshot: self.store.append(channel_key("stats"), "stats", _message(snapshot, None)),
            lambda: stats.stats_snapshot(self.store.running_count(), self.tracker.open_streams),
        )
        lifecycle.on_shutdown(lambda: self.runner.stop_all("shutdown"), self.runner.wait_all)
        self.fleet = Fleet(self)  # issue 20: GET /hosts and the runs API
        lifecycle.on_shutdown(lambda: None, self.store.close)  # after the jobs' last events: write them out

    @property
    def open_streams(self) -> int:
        """Streams handed out and not yet closed (admission's ``max_streams`` counts these)."""
        return self.tracker.open_streams

    # Starting and stopping jobs.

    def start_job(self, spec: JobSpec, principal: Principal, addr: str, *, origin: str = "jobs") -> Job:
        """Check who may run what, the allowlist and the limits, then start the command (detached; a run's job,
        origin ``runs``, waits for its run's stream from the start: JobLog.expect_viewer)."""
        return self._start(spec, principal, addr, origin, owned=False)

    def run_command(
        self, spec: JobSpec, principal: Principal, addr: str, wire: Wire, label: str
    ) -> tuple[Job, TrackedStream]:
        """GET /run: start the command and stream it on this response; it lives as long as the response.

        The response's viewer owns the job: the command waits for it rather than drop what it has not read,
        and is stopped when the response ends, however it ends (the client leaving included).
        """
        job = self._start(spec, principal, addr, "run", owned=True)

        def closed() -> None:
            self.runner.release_owner(job.id)
            self.runner.stop(job.id, "disconnected")

        stream = self.streams.open(
            [Source(job_key(job.id), START)], wire, label, kind="run", on_progress=self.runner.owner_progress(job.id),
            on_close=[closed],
        )
        return job, stream

    def _start(self, spec: JobSpec, principal: Principal, addr: str, origin: str, owned: bool) -> Job:
        executable, role = self._authorize(spec, principal)
        if lifecycle.shutdown_event.is_set():
            raise ApiError(503, "shutting_down", "the server is restarting; try again", headers={"Retry-After": "2"})
        wait = self.rate_limiter.acquire(principal.user)
        if wait:
            raise ApiError(
                429,
                "rate_limited",
                f"{principal.user} started too many jobs; try again in {retry_after_header(wait)} s",
                headers={"Retry-After": retry_after_header(wait)},
            )
        share = None if self.exempt_from_shares(principal) else self.settings.user_job_limit
        try:
            job = self.store.create_job(
                spec.argv, spec.timeout, origin, owner=principal.user, action=spec.action, params=spec.params,
                owner_limit=share, request_id=logs.REQUEST_ID.get(), stderr=spec.stderr, stdin=spec.stdin,
            )
        except TooManyJobs as exc:
            message = (
                f"{principal.user} already runs {share} jobs, the most one user may; try again when one ends"
                if exc.per_owner else f"{self.settings.max_running_jobs} jobs are already running; try again later"
            )
            raise ApiError(429, "too_many_jobs", message, headers={"Retry-After": "5"}) from None
        self.audit.record(
            "job_start",
            job=job.id,
            user=principal.user,
            via=principal.via,
            addr=addr,
            origin=origin,
            argv=list(spec.argv),
            action=spec.action,
            params=spec.params,
            run_as_uid=self._uid_for(role),
        )
        metrics.job_started(origin)
        self.runner.start(job, executable, role, owned=owned, paced=origin == "runs")
        if not job.finished:  # a job that failed to start was announced as it finished
            self._announce(job)
        return job

    @staticmethod
    def exempt_from_shares(principal: Principal) -> bool:
        """Admins are exempt from the per-user shares (running jobs, channel subscriptions)."""
        return "admin" in principal.roles

    def _authorize(self, spec: JobSpec, principal: Principal) -> tuple[str, str]:
        """The executable to run, and the role that allows it (its run_as_user applies)."""
        if spec.action is not None:
            role = self.policy.role_for_action(principal, spec.action)
            if role is None:
                raise ApiError(403, "forbidden", f"{principal.user} may not run action {spec.action!r}")
            return self.allowlist.resolve_program(spec.argv[0]), role.name
        role = self.policy.role_for_command(principal, spec.argv[0])
        if role is None:
            raise ApiError(403, "forbidden", f"{principal.user} may not run {spec.argv[0]!r}")
        try:
            return self.allowlist.executable_for(spec.argv[0]), role.name
        except CommandNotAllowed as exc:
            raise ApiError(403, "command_not_allowed", str(exc), extra={"allowed": self.allowlist.names()}) from None

    def _uid_for(self, role: str) -> int:
        uid, _ = self.runner.containment.user_for(role)
        return os.geteuid() if uid is None else uid

    def _announce(self, job: Job) -> None:
        """Tell the ``jobs`` channel (its subscribers see only the jobs they may see)."""
        record = (self.store.get_job(job.id) or job).to_json()
        self.store.append(channel_key(JOBS_CHANNEL), "job", _message(record, job.owner), audience=job.owner)

    def _job_finished(self, job: Job) -> None:
        metrics.job_finished(job.state.value, job.reason or "", job.duration(), job.output_bytes, job.dropped_bytes)
        self._announce(job)
        self.audit.record(
            "job_end",
            request_id=job.request_id,
            job=job.id,
            user=job.owner,
            state=job.state.value,
            reason=job.reason,
            exit_code=job.exit_code,
            signal=job.signal_name,
            output_bytes=job.output_bytes,
            duration=job.duration(),
        )

    def cancel_job(self, job_id: str, principal: Principal, addr: str) -> Job:
        """Cancel a running (or already stopping) job the principal may cancel.

        Waits up to kill_grace + 0.5 s for it to end, so the answer comes within kill_grace + 1 s: the job
        then is in its final state, or still ``stopping``.
        """
        job = self.get_job(job_id, principal)
        if not self.policy.may_cancel_job(principal, job.owner):
            raise ApiError(403, "forbidden", f"{principal.user} may not cancel job {job_id}")
        run = self.runner.runs.get(job_id)
        if run is None and not job.finished and self.store.request_stop(job_id, "cancelled"):
            # Run by another worker (a shared store): it stops the job; the answer waits as a local one does.
            self.audit.record("job_cancel", job=job_id, user=principal.user, addr=addr)
            return self._await_end(job_id, self.settings.kill_grace + 0.5) or job
        if job.finished or run is None:
            raise ApiError(409, "job_not_running", f"job {job_id} is not running", extra={"job": job.to_json()})
        by = principal.user if self.settings.auth_configured else None
        if self.runner.stop(job_id, "cancelled", by=by):
            self.audit.record("job_cancel", job=job_id, user=principal.user, addr=addr)
        run.done.wait(timeout=self.settings.kill_grace + 0.5)
        return self.store.get_job(job_id) or job

    def write_input(self, job_id: str, principal: Principal, addr: str, data: bytes | None) -> dict[str, Any]:
        """Write ``data`` to a running job's stdin, or close it (``data`` None): for those who may cancel the job.

        Never waits: a full pipe takes what fits, and the rest is refused (409 ``input_full``, with how much
        was written). 409 too when the job has no stdin pipe, its stdin is closed, or it has ended. Audited
        here with the size, never the content. Done by the runner that holds the job's pipe: this worker's, or,
        with a shared store, another's that the store routes the input to (its answer is waited for briefly).
        """
        job = self.get_job(job_id, principal)
        if not self.policy.may_cancel_job(principal, job.owner):
            raise ApiError(403, "forbidden", f"{principal.user} may not write to job {job_id}")
        reply = None
        if job_id not in self.runner.runs and not job.finished:
            reply = self.store.request_input(job_id, data, INPUT_ROUTE_TIMEOUT)
        if reply is None:
            reply = self._input_here(job_id, data)
            current = self.store.get_job(job_id) if reply.refused == "job_not_running" else None
            if current is not None and not current.finished:
                # Running on another worker that no shared store reaches (the history store, several workers).
                raise ApiError(409, "input_elsewhere", f"job {job_id} runs on another worker; without a shared "
                               "store (store_url), input reaches only the worker that runs it (see Scaling out)")
        if reply.refused is not None:
            raise ApiError(409, reply.refused, reply.message)
        written = reply.written
        self.audit.record("job_input", job=job_id, user=principal.user, addr=addr, bytes=written, eof=data is None)
        if data is not None and written < len(data):
            raise ApiError(
                409,
                "input_full",
                f"job {job_id}'s input is full (the command is not reading it): {written} of {len(data)} bytes "
                "written; send the rest later",
                extra={"written_bytes": written},
            )
        return {"job": job_id, "written_bytes": written, "eof": data is None}

    def _input_here(self, job_id: str, data: bytes | None) -> InputReply:
        """Write to (or close, ``data`` None) the stdin of a job this worker runs, never waiting."""
        try:
            if data is None:
                self.runner.close_input(job_id)
                return InputReply(written=0)
            return InputReply(written=self.runner.write_input(job_id, data))
        except NoInput as exc:
            return InputReply(refused=exc.reason, message=str(exc))

    def _await_end(self, job_id: str, timeout: float) -> Job | None:
        """The job once it is final (polled: it runs elsewhere), or as it is when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.store.get_job(job_id)
            if job is None or job.finished or time.monotonic() >= deadline:
                return job
            gevent.sleep(0.05)

    # Finding jobs.

    def get_job(self, job_id: str, principal: Principal) -> Job:
        """A job the principal may see, or 404 (another user's job is not even confirmed to exist)."""
        job = self.store.get_job(job_id)
        if job is None or not self.policy.may_see_job(principal, job.owner, job.id):
            raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
        return job

    JOB_QUERY_PARAMETERS = QUERY_PARAMETERS  # what GET /jobs reads (app/store/query.py)

    def find_jobs(self, principal: Principal, args: Mapping[str, str]) -> JobPage:
        """GET /jobs: a page of the jobs the principal may list (``args``: its query parameters; 400 names a bad
        one); ``user`` filters only for those who see all."""
        try:
            query = parse_job_query(args)
        except InvalidQuery as exc:
            raise ApiError(400, "bad_request", str(exc), extra={"parameter": exc.parameter}) from None
        if self.policy.sees_all_jobs(principal):
            return self.store.find_jobs(query)
        if query.owner is not None and query.owner != principal.user:
            raise ApiError(403, "forbidden", f"{principal.user} may not list other users' jobs",
                           extra={"parameter": "user"})
        page = self.store.find_jobs(dataclasses.replace(query, owner=principal.user))
        if principal.ticket_job is not None:  # a ticket sees its one job, and counts nothing else
            return page_jobs([job for job in page.jobs if job.id == principal.ticket_job], query)
        return page

    def job_visibility(self, principal: Principal) -> Callable[[LogEvent], bool] | None:
        """A filter for ``jobs`` channel events: the jobs this principal may see (None: every one)."""
        if self.policy.sees_all_jobs(principal):
            return None  # no filter to call per event and per subscriber
        return lambda event: event.audience is None or event.audience == principal.user

    def create_ticket(self, job_id: str, principal: Principal, addr: str) -> dict[str, Any]:
        """A short-lived URL that lets anyone holding it read this one job's events and output."""
        if principal.ticket_job is not None:
            raise ApiError(403, "forbidden", "a ticket cannot issue tickets")
        job = self.get_job(job_id, principal)
        ticket, expires_at = self.signer.ticket(job.id, principal.user)
        self.audit.record("ticket", job=job.id, user=principal.user, addr=addr)
        return {
            "ticket": ticket,
            "job": job.id,
            "expires_at": datetime.fromtimestamp(expires_at, UTC).isoformat(timespec="seconds"),
            "urls": {
                "events": f"/jobs/{job.id}/events?ticket={ticket}",
                "output": f"/jobs/{job.id}/output?ticket={ticket}",
            },
        }

    # Job streams.

    def open_job_stream(
        self, job_id: str, principal: Principal, cursor: int, wire: Wire, label: str
    ) -> TrackedStream | None:
        """A job's events after ``cursor``, then live; None when resuming after its final event (204)."""
        job = self.get_job(job_id, principal)
        key = job_key(job.id)
        read = self.store.read(key, cursor, limit=1)
        if read.finished and not read.events and cursor > 0:
            return None  # resumed after the final event: tells a browser to stop
        if cursor > read.last_id:
            raise ApiError(400, "bad_request", f"Last-Event-ID {cursor} is beyond this job's last event {read.last_id}")
        return self.streams.open([Source(key, Position("", cursor))], wire, label)

    def open_output(
        self, job_id: str, principal: Principal, sock: socket | None, label: str
    ) -> tuple[Job, int, TrackedStream]:
        """A job's raw output, byte-exact, followed while it runs (counted like every stream).

        Also how many bytes of the output it lacks: what the bounded buffer dropped before its first byte.
        """
        job = self.get_job(job_id, principal)
        key = job_key(job.id)
        try:
            first = self.store.read(key, 0)
        except UnknownLog:
            first = None
        frames = job_output_stream(self.store, key, self.settings, lifecycle.shutdown_event, sock, first)
        missing = first.missed if first is not None else job.dropped_bytes
        return job, missing, self.tracker.guard(frames, label)

    # Channels.

    def check_subscribe(self, name: str, principal: Principal) -> None:
        """400 for a bad channel name, then 403 unless the principal may read the channel."""
        self._check_channel(name, principal, self.policy.may_subscribe, "subscribe to")

    @staticmethod
    def _check_channel(name: str, principal: Principal, may: Callable[[Principal, str], bool], verb: str) -> None:
        """400 for a bad channel name, then 403 unless ``may``: both before the channel can be created."""
        try:
            check_channel_name(name)
        except InvalidMessage as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        if not may(principal, name):
            raise ApiError(403, "forbidden", f"{principal.user or 'anonymous'} may not {verb} {name!r}")

    def visible_channels(self, principal: Principal) -> list[dict[str, Any]]:
        """Channels the principal may read, with subscriber counts and newest ids."""
        return [c for c in self.store.describe_channels() if self.policy.may_subscribe(principal, c["name"])]

    def prepare_publish(self, name: str, principal: Principal) -> None:
        """Everything a publish is refused for before its body is read: name, right, rate, room for the channel."""
        self._check_channel(name, principal, self.policy.may_publish, "publish to")
        wait = self.publish_limiter.acquire(principal.user)
        if wait:
            raise ApiError(
                429, "rate_limited",
                f"{principal.user} published too many messages; try again in {retry_after_header(wait)} s",
                headers={"Retry-After": retry_after_header(wait)},
            )
        try:
            self.store.ensure_channel(name)
        except TooManyChannels:
            raise self._too_many_channels() from None

    def publish(self, name: str, principal: Principal, message: Message) -> str:
        """Publish a message checked by ``prepare_publish``; its id (``<epoch>-<n>``)."""
        user = principal.user if self.settings.auth_configured else None
        try:
            event = self.store.append(channel_key(name), message.event, _message(message.data, user))
        except TooManyChannels:
            raise self._too_many_channels() from None
        metrics.message_published()
        head = self.store.peek_channel(name)
        return Position(head.epoch if head else "", event.id).event_id

    def _too_many_channels(self) -> ApiError:
        return ApiError(
            429, "too_many_channels", f"{self.settings.max_channels} channels exist already",
            headers={"Retry-After": "60"},
        )

    def open_channel_stream(
        self, name: str, principal: Principal, cursor: Position, wire: Wire, label: str
    ) -> TrackedStream:
        """A channel's retained messages after ``cursor``, then live.

        A cursor of another epoch (a restart since, or a bare number from an older server) is not an error:
        the stream starts with a ``reset`` event and the retained history. One beyond the channel's newest
        message in its current epoch is a 400.
        """
        self.check_subscribe(name, principal)
        self._check_channel_cursor(name, cursor, f"Last-Event-ID {cursor.event_id}")
        visible = self.job_visibility(principal) if name == JOBS_CHANNEL else None
        # Counted from here: the response's close (however the stream ends, even unstarted) uncounts it.
        (subscription,) = self.subscribe(principal, [name])
        # One key string for every subscriber of a channel (sys.intern): an idle subscriber keeps it for hours.
        source = Source(sys.intern(channel_key(name)), cursor, visible)
        return self.streams.open(
            [source], wire, label, kind="channel", on_close=[partial(self.unsubscribe, (subscription,))]
        )

    def _check_channel_cursor(self, name: str, cursor: Position, what: str) -> None:
        head = self.store.peek_channel(name)  # a channel that does not exist yet has no messages
        if head is not None and cursor.epoch == head.epoch and cursor.offset > head.offset:
            raise ApiError(400, "bad_request", f"{what} is beyond this channel's last message {head.event_id}")

    def subscribe(self, principal: Principal, names: list[str]) -> list[Subscription]:
        """Subscribe one stream of ``principal`` to channels, within the user's share; 429 beyond it.

        Only a subscriber who may publish to a channel keeps it from being forgotten, or makes
        room for it by forgetting another (store/channels.py).
        """
        limit = self.settings.max_subscriptions_per_user
        held = self.store.subscriptions_of(principal.user)
        if not self.exempt_from_shares(principal) and held + len(names) > limit:
            raise ApiError(
                429, "too_many_subscriptions",
                f"{principal.user} holds {held} channel subscriptions; at most {limit} at once",
                headers={"Retry-After": "60"},
            )
        subscriptions: list[Subscription] = []
        try:
            for name in names:
                pins = self.policy.may_publish(principal, name)
                subscriptions.append(self.store.subscribe(name, principal.user, pins=pins, keep=names))
        except TooManyChannels:
            for subscription in subscriptions:
                self.store.unsubscribe(subscription)
            raise self._too_many_channels() from None
        metrics.subscribed(len(subscriptions))
        return subscriptions

    def unsubscribe(self, subscriptions: Sequence[Subscription]) -> None:
        """End subscriptions made by ``subscribe``."""
        for subscription in subscriptions:
            self.store.unsubscribe(subscription)
        metrics.unsubscribed(len(subscriptions))

    # Many jobs and channels on one stream.

    def open_multiplexed_stream(
        self, jobs: list[str], channels: list[str], principal: Principal, last_event_id: str | None, wire: Wire,
        label: str,
    ) -> TrackedStream | None:
        """Every named job and channel on one stream, resumed with one composite id; None (204) when every
        named job has been delivered to its end."""
        if not jobs and not channels:
            raise ApiError(400, "bad_request", "name at least one ?job=<id> or ?channel=<name>")
        if len(jobs) + len(channels) > self.settings.max_stream_sources:
            raise ApiError(400, "bad_request", f"at most {self.settings.max_stream_sources} jobs and channels")
        job_keys = [job_key(self.get_job(job_id, principal).id) for job_id in jobs]
        for name in channels:
            self.check_subscribe(name, principal)
        keys = [*job_keys, *(channel_key(name) for name in channels)]
        try:
            cursors = parse_composite(last_event_id, len(keys))
        except InvalidCursor as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        unknown = set(cursors) - set(keys)
        if unknown:
            raise ApiError(400, "bad_request", f"Last-Event-ID names sources not in this request: {sorted(unknown)}")
        if cursors and not channels and all(self._delivered(key, cursors.get(key, START)) for key in job_keys):
            return None  # every job already delivered to its end: stop reconnecting
        self._check_cursors(job_keys, channels, cursors)
        jobs_visible = self.job_visibility(principal)
        # Only now, with every check passed, are new channels created, and counted as subscribed until
        # the response's close (however the stream ends, even unstarted).
        subscriptions = self.subscribe(principal, channels)
        sources = [Source(key, cursors.get(key, START)) for key in job_keys]
        sources += [
            Source(sys.intern(channel_key(name)), cursors.get(channel_key(name), START),
                   jobs_visible if name == JOBS_CHANNEL else None)
            for name in channels
        ]
        return self.streams.open(sources, wire, label, kind="events", multiplexed=True,
                                 on_close=[partial(self.unsubscribe, subscriptions)])

    def _delivered(self, key: str, cursor: Position) -> bool:
        read = self.store.read(key, cursor, limit=1)
        return read.finished and not read.events

    def _check_cursors(self, job_keys: list[str], channels: list[str], cursors: dict[str, Position]) -> None:
        """400 for a cursor beyond its source's last id (as the single-source streams answer)."""
        for key in job_keys:
            cursor = cursors.get(key, START)
            if cursor.epoch:
                raise ApiError(400, "bad_request", f"Last-Event-ID {key}={cursor.event_id}: a job's id has no epoch")
            last = self.store.read(key, cursor, limit=1).last_id
            if cursor.offset > last:
                raise ApiError(
                    400, "bad_request", f"Last-Event-ID {key}={cursor.offset} is beyond that source's last id {last}"
                )
        for name in channels:
            key = channel_key(name)
            if key in cursors:
                self._check_channel_cursor(name, cursors[key], f"Last-Event-ID {key}={cursors[key].event_id}")

    # Who may do what.

    def actions_for(self, principal: Principal) -> dict[str, Any]:
        """The named actions the principal may run (with their parameters), the commands they may type, and
        whether those commands may take input (``stdin_allowed``: the allow_stdin setting)."""
        actions = [
            action.to_json()
            for name, action in sorted(self.settings.actions.items())
            if self.policy.may_run_action(principal, name)
        ]
        commands = [name for name in self.allowlist.names() if self.policy.may_run_command(principal, name)]
        return {"actions": actions, "commands": commands, "stdin_allowed": self.settings.allow_stdin}

    def login_wait(self, addr: str) -> float:
        """Seconds before ``addr`` may try to log in again (0: now)."""
        return self.login_limiter.acquire(addr)

    def logged_in(self, principal: Principal, credential: Credential, addr: str) -> str:
        """Audit a login; the session cookie's value."""
        self.audit.record("login", user=principal.user, addr=addr)
        return self.signer.session_cookie(principal.user, credential.key)

    def refused(
        self, principal: Principal | None, status: int, reason: str, *, addr: str, method: str, path: str
    ) -> None:
        """Audit a refused request: the first per address, status and user in each interval, then a count."""
        user = principal.user if principal and principal.user else None
        if not self.audit.enabled or not self.refusals.admit((addr, status, user)):
            return
        self.audit.record(
            "refused",
            status=status,
            reason=capped(reason),
            user=capped(user),
            addr=addr,
            method=capped(method, 16),
            path=capped(path),
        )

    def _report_repeated_refusals(self) -> None:
        """Every interval: one line per address (status, user) whose refusals were held back, with their count."""
        interval = self.refusals.interval
        while True:
            gevent.sleep(interval)
            for key, count in self.refusals.due():
                addr, status, user = key if key != RepeatCollapser.OTHERS else ("(other addresses)", None, None)
                self.audit.record("refused_repeated", addr=addr, status=status, user=capped(user), count=count,
                                  seconds=interval)

    # Metrics.

    def metrics_scrape(self, principal: Principal, peer: str) -> tuple[bytes, str]:
        """GET /metrics: this host's workers' metrics and their content type, for the metrics role or an
        allowed peer (the connection's own address: a proxy in front would make everyone a loopback peer)."""
        if not (self.policy.may_read_metrics(principal) or self.metrics_peers.trusts(peer)):
            raise ApiError(403, "forbidden", "GET /metrics needs a token with the metrics role, or a peer in "
                           "metrics_allow")
        return metrics.exposition()

    # Health.

    def health(self) -> dict[str, Any]:
        """Liveness and a few counters of this worker (``status``: ``ok``, ``shutting_down`` or
        ``store_unavailable``; ``store``: the store's backend and health)."""
        buffered, max_buffered = self.store.buffered_bytes()
        problem = self.store.health_problem()
        store = self.store.status()
        if lifecycle.shutdown_event.is_set():
            status = "shutting_down"
        elif not store["ok"]:
            status = "store_unavailable"
        else:
            status = "degraded" if problem else "ok"  # degraded: still serving (a load balancer keeps the node)
        return {
            "status": status,
            "store": store,
            **({"degraded": problem} if problem else {}),
            "worker_pid": os.getpid(),
            "running_jobs": self.store.running_count(),
            "max_running_jobs": self.settings.max_running_jobs,
            "containment": self.containment_plan.public(),
            "open_streams": self.tracker.open_streams,
            "max_streams": self.capacity.max_streams,
            "worker_connections": self.capacity.worker_connections,
            "buffered_bytes": buffered,
            "max_buffered_bytes": max_buffered,
        }


def _message(data: Any, user: str | None) -> dict[str, Any]:
    """A channel message's payload: what was published, by whom (when auth is on), and when."""
    return {"data": data, "user": user, "time": datetime.now(UTC).isoformat(timespec="milliseconds")}


def _containment_plan(settings: Settings) -> cgroups.CgroupPlan:
    """The master's decision (gunicorn's on_starting hook); process groups without one."""
    plan = cgroups.server_plan()
    if plan is None:
        plan = cgroups.process_groups("no cgroup was set up for this process: start it with gunicorn.conf.py")
    if settings.cgroup == "required" and not plan.uses_cgroups:
        raise cgroups.CgroupError(f"cgroup = required, but {plan.reason}")
    return plan


def _warn_if_ping_cannot_work(settings: Settings, containment: Containment, allowlist: Allowlist) -> None:
    """no_new_privileges keeps ping from its file capability: it then needs net.ipv4.ping_group_range."""
    ping = allowlist.by_name.get("ping")
    if ping is None or not settings.no_new_privileges:
        return
    uid = os.geteuid() if containment.uid is None else containment.uid
    gid = os.getegid() if containment.gid is None else containment.gid
    if uid == 0:
        return  # root opens raw sockets itself
    try:
        with open("/proc/sys/net/ipv4/ping_group_range") as fh:
            low, high = (int(n) for n in fh.read().split())
    except (OSError, ValueError):
        return
    if not low <= gid <= high:
        log.warning(
            "ping is allowed but will fail: no_new_privileges keeps it from its file capability, and "
            "net.ipv4.ping_group_range (%d %d) excludes group %d; widen the range (see README) or set "
            "no_new_privileges = false", low, high, gid,
        )
