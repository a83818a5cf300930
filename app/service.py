"""The service object: settings, store, allowlist and runner, wired once per app."""

from __future__ import annotations

import logging
import os

from flask import current_app

from . import lifecycle
from .allowlist import Allowlist, CommandNotAllowed
from .childenv import child_environment
from .config import Settings
from .errors import ApiError
from .jobs import Job, MemoryJobStore, TooManyJobs
from .jobspec import JobSpec
from .pgroups import ProcessGroupRegistry, default_run_dir
from .runner import ProcessRunner

log = logging.getLogger(__name__)

EXTENSION_KEY = "sse_commander"


class Service:
    """Everything a view needs to start, find and stop jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.allowlist = Allowlist.resolve(
            settings.allowed_commands,
            search_path=settings.child_path,
            allow_any=settings.allow_any_command,
        )
        if settings.allow_any_command:
            log.warning("allow_any_command is on: any executable on %s may run", settings.child_path)
        self.store = MemoryJobStore(
            max_running=settings.max_running_jobs,
            buffer_bytes=settings.job_buffer_bytes,
            max_finished=settings.max_finished_jobs,
            finished_ttl=settings.finished_job_ttl,
        )
        registry = ProcessGroupRegistry(settings.run_dir or default_run_dir(), os.getpid())
        self.runner = ProcessRunner(
            settings,
            self.store,
            self.allowlist,
            child_environment(settings, os.environ),
            registry,
        )
        lifecycle.on_shutdown(lambda: self.runner.stop_all("shutdown"), self.runner.wait_all)

    def start_job(self, spec: JobSpec, origin: str) -> Job:
        """Check the allowlist and the concurrency limit, then start the command."""
        try:
            executable = self.allowlist.executable_for(spec.argv[0])
        except CommandNotAllowed as exc:
            raise ApiError(403, "command_not_allowed", str(exc), extra={"allowed": self.allowlist.names()}) from None
        if lifecycle.shutdown_event.is_set():
            raise ApiError(503, "shutting_down", "the server is restarting; try again", headers={"Retry-After": "2"})
        try:
            job = self.store.create(spec.argv, spec.timeout, origin)
        except TooManyJobs:
            raise ApiError(
                429,
                "too_many_jobs",
                f"{self.settings.max_running_jobs} jobs are already running; try again later",
                headers={"Retry-After": "5"},
            ) from None
        self.runner.start(job, executable)
        return job

    def get_job(self, job_id: str) -> Job:
        """A job by id, or a 404 ApiError."""
        job = self.store.get(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
        return job


def current_service() -> Service:
    """The Service of the app handling this request."""
    return current_app.extensions[EXTENSION_KEY]
