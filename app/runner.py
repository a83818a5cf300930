"""The process runner: spawns a job's command and pumps its pipes into the job log.

Data flow: process pipes -> runner (this module) -> job log -> stream generator -> socket.

Each job gets one greenlet, and its output an ``OutputPump``: libev io
watchers on stdout and stderr (never a read that blocks the hub) whose
callbacks read whatever is already in the pipe, coalesced into one event, and
append it to the log. The loop then serves every other ready greenlet and
watcher before a still-readable pipe is read again, so a flooding command
cannot starve the worker. Every command runs in its
own session; stopping a job signals the whole process group, and the group
is also cleaned up when the leader exits on its own.

Commands are started by ``app.spawn`` (clone with CLONE_VM and
raw system calls in the child, never a fork of the worker), and reaped by a
libev child watcher.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
from gevent.event import Event
from gevent.hub import Waiter

from .allowlist import Allowlist
from .config import Settings
from .eventlog import EventLog
from .jobs import Job, JobState, MemoryJobStore
from .pgroups import ProcessGroupRegistry
from .pipes import PipeWatch
from .runas import JobUsers, resolve_job_users
from .spawn import ChildProcess, SpawnError, environment_block, spawn
from .sse import OutputJSON

log = logging.getLogger(__name__)

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

STATE_FOR_REASON = {
    "exited": JobState.EXITED,
    "killed": JobState.KILLED,
    "output_limit": JobState.KILLED,
    "timeout": JobState.TIMED_OUT,
    "cancelled": JobState.CANCELLED,
    "disconnected": JobState.CANCELLED,
    "shutdown": JobState.CANCELLED,
}


@dataclass(frozen=True)
class Containment:
    """Who a command runs as and what it may consume."""

    uid: int | None = None
    gid: int | None = None
    rlimits: tuple[tuple[int, int], ...] = ()
    users: JobUsers = field(default_factory=JobUsers)  # roles with their own run_as_user

    @classmethod
    def from_settings(cls, settings: Settings) -> Containment:
        """Resolve the run-as user (only when running as root) and the rlimits."""
        limits = []
        for name, limit, value in (
            ("rlimit_cpu", resource.RLIMIT_CPU, settings.rlimit_cpu),
            ("rlimit_as", resource.RLIMIT_AS, settings.rlimit_as),
            ("rlimit_nofile", resource.RLIMIT_NOFILE, settings.rlimit_nofile),
            ("rlimit_nproc", resource.RLIMIT_NPROC, settings.rlimit_nproc),
        ):
            if value <= 0:
                continue
            hard = resource.getrlimit(limit)[1]
            if hard != resource.RLIM_INFINITY and value > hard:
                # The child can only lower its limits (it is no longer root when they are set).
                log.warning("%s=%d is above this host's hard limit %d; using %d", name, value, hard, hard)
                value = hard
            limits.append((limit, value))
        try:
            users = resolve_job_users(settings, os.geteuid() == 0)
        except LookupError as exc:
            raise ValueError(str(exc)) from None
        default = users.default
        if default is None:
            return cls(rlimits=tuple(limits), users=users)
        return cls(default.uid, default.gid, tuple(limits), users)

    def user_for(self, role: str | None) -> tuple[int | None, int | None]:
        """The uid and gid a command allowed by ``role`` runs as (None: the server's own)."""
        if role is not None and role in self.users.by_role:
            user = self.users.by_role[role]
            return (user.uid, user.gid) if user else (None, None)
        return self.uid, self.gid


def _signal_name(number: int) -> str | None:
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def _spawn_failure_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "not_found"
    if exc.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
        return "not_executable"
    return "spawn_failed"


@dataclass
class JobRun:
    """A running job's process and how it is being stopped."""

    job: Job
    proc: ChildProcess | None = None
    stop_reason: str | None = None
    stopping: Event = field(default_factory=Event)
    done: Event = field(default_factory=Event)
    terminator: gevent.Greenlet | None = None


class OutputPump:
    """Moves one job's pipe output into its log: pipes -> runner -> job log.

    Each readable pipe is read and its output appended (and so delivered to
    caught-up viewers) right in the hub's io callback; the runner's greenlet
    sleeps until every pipe has ended, the owning viewer is too far behind
    (flow control), or reading failed. A line of output thus costs no greenlet
    switch before it leaves the worker.
    """

    def __init__(self, log_: EventLog, settings: Settings, on_limit: Callable[[], object]) -> None:
        self.log = log_
        self.read_size = settings.read_chunk_bytes
        self.coalesce = settings.coalesce_bytes
        self.limit = settings.max_output_bytes
        self.on_limit = on_limit  # stops the job: output_limit reached
        self.pipes = PipeWatch(self.readable)
        self.decoders: dict[str, codecs.IncrementalDecoder] = {}
        self.pending: dict[str, bytes] = {}  # the start of a multi-byte character, per pipe
        self.waiter: Waiter | None = None
        self.failure: BaseException | None = None

    def add(self, fd: int, name: str) -> None:
        """Pump ``fd`` (non-blocking) as the output kind ``name``."""
        self.pipes.register(fd, name)
        self.decoders[name] = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending[name] = b""

    def run(self, wake: tuple[Event, ...]) -> None:
        """Pump until every pipe has ended (in the runner's greenlet)."""
        try:
            while self.pipes:
                self.log.wait_for_room(wake=wake)
                self.waiter = Waiter()
                self.pipes.start()
                try:
                    self.waiter.get()
                finally:
                    self.waiter = None
                    self.pipes.stop()
                if self.failure is not None:
                    raise self.failure
        finally:
            self.pipes.close()

    def readable(self, fd: int, name: str) -> None:
        """A pipe has output or has ended (called by the hub): move it into the log."""
        try:
            self._move(fd, name)
            if self.pipes and not self.log.owner_far_behind():
                return
        except Exception as exc:  # raised in the runner's greenlet, which handles it
            self.failure = exc
        self.pipes.stop()
        if self.waiter is not None:
            self.waiter.switch(None)

    def _move(self, fd: int, name: str) -> None:
        data, eof = self._read_available(fd)
        limit = self.limit
        if limit and data:
            room = limit - self.log.output_bytes - len(self.pending[name])
            if len(data) >= room:
                data = data[: max(room, 0)]
                self.on_limit()
        if data:
            self._emit(name, data)
        if eof:
            self.pipes.unregister(fd)
            self._emit(name, b"", final=True)

    def _read_available(self, fd: int) -> tuple[bytes, bool]:
        """Read what the pipe holds now, up to coalesce_bytes, without waiting."""
        size, limit = self.read_size, self.coalesce
        parts: list[bytes] = []
        total = 0
        while total < limit:
            try:
                data = os.read(fd, size)
            except BlockingIOError:
                return b"".join(parts), False
            if not data:
                return b"".join(parts), True
            parts.append(data)
            total += len(data)
            if len(data) < size:
                break  # drained for now; the next read would only say EAGAIN
        return b"".join(parts), False

    def _emit(self, name: str, data: bytes, final: bool = False) -> None:
        pending, decoder = self.pending, self.decoders[name]
        raw = pending[name] + data
        if not final and data.isascii() and not decoder.getstate()[0]:
            # The common case, and the hot path: ASCII needs no decoding, its bytes are its UTF-8.
            text = data
        else:
            text = decoder.decode(data, final=final).encode("utf-8")
            if not text:
                # Only part of a multi-byte character so far: carry its bytes to the next event.
                pending[name] = raw
                return
        pending[name] = b""
        self.log.append(name, OutputJSON(name, text), raw)


class ProcessRunner:
    """Starts, pumps, stops and reaps the commands of one worker."""

    def __init__(
        self,
        settings: Settings,
        store: MemoryJobStore,
        allowlist: Allowlist,
        env: dict[str, str],
        registry: ProcessGroupRegistry | None = None,
        containment: Containment | None = None,
        on_finish: Callable[[Job], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.allowlist = allowlist
        self.env = env
        self._env_block = environment_block(env)
        self.registry = registry
        self.containment = containment or Containment()
        self.on_finish = on_finish
        self.runs: dict[str, JobRun] = {}

    # Lifecycle of one job.

    def start(self, job: Job, executable: str, role: str | None = None) -> JobRun:
        """Spawn the job's command now (as the user of ``role``, the role that allowed it) and pump it.

        A command that cannot start is recorded (``err`` event, state
        failed_to_start) before this returns, so the caller sees it at once.
        """
        run = JobRun(job)
        # Listed while the child execs (this greenlet waits for that), so that a stop meanwhile is not lost.
        self.runs[job.id] = run
        try:
            run.proc = self._spawn(job, executable, role)
        except BaseException as exc:
            # Anything that stops the spawn must still finish the job, or it would stay "running".
            # A kill of this greenlet while the child execs (spawn kills the child) is re-raised.
            self.runs.pop(job.id, None)
            failure = exc if isinstance(exc, OSError) else OSError(0, str(exc) or type(exc).__name__)
            self._record_spawn_failure(job, failure)
            run.done.set()
            if not isinstance(exc, Exception):
                raise
            return run
        if self.registry is not None:
            self.registry.add(run.proc.pid)
        self.store.mark_started(job.id, run.proc.pid)
        self.store.append(
            job.id, "start", {"type": "start", "job": job.id, "pid": run.proc.pid, "argv": list(job.argv)}
        )
        if run.stopping.is_set():
            run.terminator = gevent.spawn(self._terminate_group, run.proc.pid)
        gevent.spawn(self._run, run)
        return run

    def _run(self, run: JobRun) -> None:
        job, proc = run.job, run.proc
        timer = gevent.spawn_later(job.timeout, self.stop, job.id, "timeout")
        reaper = gevent.spawn(self._reap_leader, run)
        try:
            try:
                self._pump(run)
                reaper.join()
            finally:
                timer.kill(block=False)
                reaper.kill(block=False)
                proc.close_pipes()
            self._record_exit(run)
        except BaseException:
            log.exception("runner for job %s failed", job.id)
            self._kill_group(proc.pid, signal.SIGKILL)
            if not self.store.get(job.id).finished:
                self.store.append(job.id, "exit", {"type": "exit", "reason": "killed", "code": None, "signal": None})
                self.store.finish(job.id, state=JobState.KILLED, reason="killed", error="internal runner error")
            raise
        finally:
            if self.registry is not None:
                self.registry.remove(proc.pid)
            run.done.set()
            self.runs.pop(job.id, None)

    def _spawn(self, job: Job, executable: str, role: str | None) -> ChildProcess:
        # No shell; stdin /dev/null; the stripped environment; own session; every other fd
        # closed; the run-as user with only its group; then the rlimits and the death signal
        # (setting the user would clear it). See app/spawn.py.
        contain = self.containment
        uid, gid = contain.user_for(role)
        return spawn(
            executable,
            job.argv,
            self._env_block,
            cwd=self.settings.child_cwd,
            uid=uid,
            gid=gid,
            rlimits=contain.rlimits,
            pdeathsig=signal.SIGKILL,
        )

    def _record_spawn_failure(self, job: Job, exc: OSError) -> None:
        if getattr(exc, "_failed_chdir", False):
            reason, message = "spawn_failed", f"cannot enter working directory {exc.filename}: {exc.strerror}"
        elif isinstance(exc, SpawnError) and exc.stage != "execute":
            # Containment could not be set up (user, limits, ...): never a property of the command.
            reason, message = "spawn_failed", f"{job.argv[0]}: cannot {exc.stage}: {exc.strerror}"
        else:
            reason, message = _spawn_failure_reason(exc), f"{job.argv[0]}: {exc.strerror or exc}"
        self.store.append(job.id, "err", {"type": "error", "out": message, "reason": reason, "errno": exc.errno})
        self._finished(self.store.finish(job.id, state=JobState.FAILED_TO_START, reason=reason, error=message))

    def _finished(self, job: Job) -> None:
        if self.on_finish is not None:
            try:
                self.on_finish(job)
            except Exception:
                log.exception("on_finish hook failed for job %s", job.id)

    def _record_exit(self, run: JobRun) -> None:
        job, proc = run.job, run.proc
        code = proc.returncode
        signal_number = -code if code is not None and code < 0 else None
        reason = run.stop_reason or ("killed" if signal_number else "exited")
        exit_code = code if signal_number is None else None
        ended = time.time()
        payload = {
            "type": "exit",
            "reason": reason,
            "code": exit_code,
            "signal": signal_number,
            "signal_name": _signal_name(signal_number) if signal_number else None,
            "duration": round(ended - (job.started_at or ended), 6),
        }
        self.store.append(job.id, "exit", payload)
        finished = self.store.finish(
            job.id,
            state=STATE_FOR_REASON[reason],
            reason=reason,
            exit_code=exit_code,
            signal=signal_number,
            signal_name=payload["signal_name"],
            ended_at=ended,
        )
        self._finished(finished)

    # Reading the pipes.

    def _pump(self, run: JobRun) -> None:
        proc = run.proc
        pump = OutputPump(self.store.log(run.job.id), self.settings, lambda: self.stop(run.job.id, "output_limit"))
        for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            # A pipe as large as one event lets a flooding command write a whole
            # event's worth between two reads (Linux's default is 64 KiB).
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, self.settings.coalesce_bytes)
            pump.add(fd, name)
        pump.run(wake=(run.stopping,))

    # Stopping and reaping.

    def _reap_leader(self, run: JobRun) -> None:
        """Wait for the leader; then end whatever else of its group still holds the pipes."""
        run.proc.wait()
        if not run.stopping.is_set() and self._group_alive(run.proc.pid):
            self._terminate_group(run.proc.pid)

    def stop(self, job_id: str, reason: str) -> bool:
        """Stop a running job: SIGTERM to its group, SIGKILL after kill_grace. False if not running."""
        run = self.runs.get(job_id)
        if run is None or run.stopping.is_set():
            return False
        if run.proc is None or run.proc.returncode is None:
            run.stop_reason = reason
        run.stopping.set()
        if run.proc is not None:  # else start() terminates it once the child has exec'd
            run.terminator = gevent.spawn(self._terminate_group, run.proc.pid)
        return True

    def stop_all(self, reason: str) -> None:
        """Stop every running job (server shutdown)."""
        for job_id in list(self.runs):
            self.stop(job_id, reason)

    def wait_all(self, timeout: float) -> None:
        """Wait until every job has been reaped and recorded, up to ``timeout``."""
        gevent.wait([run.done for run in list(self.runs.values())], timeout=timeout)

    def _terminate_group(self, pgid: int) -> None:
        self._kill_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.kill_grace
        while time.monotonic() < deadline:
            if not self._group_alive(pgid):
                return
            gevent.sleep(0.05)
        self._kill_group(pgid, signal.SIGKILL)

    @staticmethod
    def _kill_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
