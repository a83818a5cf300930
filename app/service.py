"""The service object: settings, store, allowlist, policy and runner, wired once per app."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from typing import Any

import gevent
from flask import current_app, request

from .config import Settings
from .http.admission import Admission
from .http.authn import Authenticator
from .http.errors import ApiError
from .policy.access import Policy, Principal
from .policy.allowlist import Allowlist, CommandNotAllowed
from .policy.audit import AuditLog, RepeatCollapser, capped
from .policy.jobspec import JobSpec
from .policy.ratelimit import RateLimiter, retry_after_header
from .policy.signing import Signer
from .process import cgroups
from .process.childenv import child_environment
from .process.pgroups import ProcessGroupRegistry, default_run_dir
from .process.runner import Containment, ProcessRunner
from .server import capacity, lifecycle
from .store.budget import MemoryBudget
from .store.channels import ChannelHub, Subscription, TooManyChannels, run_stats_publisher, stats_snapshot
from .store.eventlog import LogEvent
from .store.jobs import Job, MemoryJobStore, TooManyJobs
from .streaming.response import StreamTracker

log = logging.getLogger(__name__)

EXTENSION_KEY = "sse_commander"


class Service:
    """Everything a view needs to start, find and stop jobs, and to decide who may."""

    def __init__(self, settings: Settings) -> None:
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
        self.audit = AuditLog(settings.audit_log)
        # Refused requests from one address: one line each interval, then a count (a flood of 401s
        # must not become a flood of log lines).
        self.refusals = RepeatCollapser(settings.refused_log_interval)
        if self.audit.enabled and settings.refused_log_interval:
            gevent.spawn(self._report_repeated_refusals)
        self.authenticator = Authenticator(settings, self.signer)
        self.rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.publish_limiter = RateLimiter(settings.publish_rate_per_minute, settings.publish_rate_burst)
        self.login_limiter = RateLimiter(settings.login_attempts_per_minute, settings.login_attempts_per_minute)
        # One budget for every job's and channel's buffered events (budget.py).
        self.budget = MemoryBudget(settings.max_buffered_bytes)
        self.store = MemoryJobStore(
            max_running=settings.max_running_jobs,
            buffer_bytes=settings.job_buffer_bytes,
            max_finished=settings.max_finished_jobs,
            finished_ttl=settings.finished_job_ttl,
            budget=self.budget,
        )
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
        self.hub = ChannelHub(
            max_channels=settings.max_channels,
            history=settings.channel_history,
            history_bytes=settings.channel_history_bytes,
            budget=self.budget,
        )
        self.tracker = StreamTracker(settings.send_timeout)
        # This worker's own limit: the settings, within what its open-files limit and gunicorn's pool carry.
        self.capacity = capacity.plan_capacity(settings, capacity.current_nofile(), capacity.worker_pool)
        self.admission = Admission(self.capacity.max_streams, settings.busy_retry_ms, lambda: self.tracker.count)
        self.stats_publisher = run_stats_publisher(
            self.hub,
            settings.stats_interval,
            lambda: stats_snapshot(self.store.running_count(), self.tracker.open_streams),
        )
        lifecycle.on_shutdown(lambda: self.runner.stop_all("shutdown"), self.runner.wait_all)

    # Starting jobs.

    def start_job(self, spec: JobSpec, origin: str, principal: Principal) -> Job:
        """Check who may run what, the allowlist and the limits, then start the command."""
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
            job = self.store.create(
                spec.argv, spec.timeout, origin, owner_limit=share, owner=principal.user, action=spec.action,
                params=spec.params,
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
            addr=self.authenticator.client_address(),
            origin=origin,
            argv=list(spec.argv),
            action=spec.action,
            params=spec.params,
            run_as_uid=self._uid_for(role),
        )
        self.runner.start(job, executable, role)
        if not job.finished:  # a job that failed to start was announced as it finished
            self._announce(job)
        return job

    @staticmethod
    def exempt_from_shares(principal: Principal) -> bool:
        """Admins are exempt from the per-user shares (running jobs, channel subscriptions)."""
        return "admin" in principal.roles

    # Channel subscriptions.

    def subscribe(self, principal: Principal, names: list[str]) -> list[Subscription]:
        """Subscribe one stream of ``principal`` to channels, within the user's share; 429 beyond it.

        Only a subscriber who may publish to a channel keeps it from being forgotten, or makes
        room for it by forgetting another (channels.py).
        """
        limit = self.settings.max_subscriptions_per_user
        held = self.hub.subscriptions_of(principal.user)
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
                subscriptions.append(self.hub.subscribe(name, principal.user, pins=pins, keep=names))
        except TooManyChannels:
            self.unsubscribe(subscriptions)
            raise ApiError(
                429, "too_many_channels", f"{self.settings.max_channels} channels exist already",
                headers={"Retry-After": "60"},
            ) from None
        return subscriptions

    def unsubscribe(self, subscriptions: list[Subscription]) -> None:
        """End subscriptions made by ``subscribe``."""
        for subscription in subscriptions:
            self.hub.unsubscribe(subscription)

    def _announce(self, job: Job) -> None:
        """Tell the ``jobs`` channel (its subscribers see only the jobs they may see)."""
        self.hub.publish("jobs", "job", self.store.get(job.id).to_json(), user=job.owner, audience=job.owner)

    def job_visibility(self, principal: Principal) -> Callable[[LogEvent], bool] | None:
        """A filter for ``jobs`` channel events: the jobs this principal may see (None: every one)."""
        if self.policy.sees_all_jobs(principal):
            return None  # no filter to call per event and per subscriber
        return lambda event: event.audience is None or event.audience == principal.user

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

    def _job_finished(self, job: Job) -> None:
        self._announce(job)
        self.audit.record(
            "job_end",
            job=job.id,
            user=job.owner,
            state=job.state.value,
            reason=job.reason,
            exit_code=job.exit_code,
            signal=job.signal_name,
            output_bytes=job.output_bytes,
            duration=job.duration(),
        )

    # Finding jobs.

    def get_job(self, job_id: str, principal: Principal) -> Job:
        """A job the principal may see, or 404 (another user's job is not even confirmed to exist)."""
        job = self.store.get(job_id)
        if job is None or not self.policy.may_see_job(principal, job.owner, job.id):
            raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
        return job

    def visible_jobs(self, principal: Principal) -> list[Job]:
        """The jobs the principal may list: their own, or all for roles that see all."""
        jobs = self.store.list()
        if self.policy.sees_all_jobs(principal):
            return jobs
        return [job for job in jobs if self.policy.may_see_job(principal, job.owner, job.id)]

    def cancel_job(self, job_id: str, principal: Principal) -> Job:
        """Cancel a running (or already stopping) job the principal may cancel.

        Waits up to kill_grace + 0.5 s for it to end, so the answer comes within kill_grace + 1 s: the job
        then is in its final state, or still ``stopping``.
        """
        job = self.get_job(job_id, principal)
        if not self.policy.may_cancel_job(principal, job.owner):
            raise ApiError(403, "forbidden", f"{principal.user} may not cancel job {job_id}")
        run = self.runner.runs.get(job_id)
        if job.finished or run is None:
            raise ApiError(409, "job_not_running", f"job {job_id} is not running", extra={"job": job.to_json()})
        if self.runner.stop(job_id, "cancelled"):
            self.audit.record("job_cancel", job=job_id, user=principal.user, addr=self.authenticator.client_address())
        run.done.wait(timeout=self.settings.kill_grace + 0.5)
        return self.store.get(job_id) or job

    def refused(self, principal: Principal | None, status: int, reason: str, **fields: Any) -> None:
        """Audit a refused request: the first per address, status and user in each interval, then a count."""
        user = principal.user if principal and principal.user else None
        addr = self.authenticator.client_address()
        if not self.audit.enabled or not self.refusals.admit((addr, status, user)):
            return
        self.audit.record(
            "refused",
            status=status,
            reason=capped(reason),
            user=capped(user),
            addr=addr,
            method=capped(request.method, 16),
            path=capped(request.path),
            **fields,
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


def current_service() -> Service:
    """The Service of the app handling this request."""
    return current_app.extensions[EXTENSION_KEY]
