"""The process runner: spawns a job's command and pumps its pipes into the job log.

Data flow: process pipes -> runner (this module) -> job log -> stream generator -> socket.

Each job gets one greenlet, and its output an ``OutputPump``: libev io
watchers on stdout and stderr (never a read that blocks the hub) whose
callbacks run one pump round: stdout, then stderr, each read once for what it
holds at that moment, as one event each, appended to the log. The loop then
serves every other ready greenlet and watcher before a still-readable pipe is
read again, so a flooding command cannot starve the worker.

Order between the two streams: the pipes are read in turn (stdout, stderr,
stdout, ...), each read taking only what the pipe holds at that moment, so
two writes to different pipes are shown in the order they were made whenever
a read came between them; output waiting when a round starts is shown stdout
first. A job started with ``stderr = "merged"`` has one pipe for both, in
exact order.

Commands are started by ``app.process.spawn`` (a spawner thread clones them with
CLONE_VM | CLONE_VFORK; never a fork of the worker), each in its own session
and, where the host allows, its own cgroup (``app.process.cgroups``); ``JobProcesses``
signals and kills all of a job at once. The job's timeout runs from its spawn.
Stopping a job sends SIGTERM to all of it, and SIGKILL after ``kill_grace``;
so does the leader's own exit to whatever it leaves behind. Every job reaches
a final state: one that is not over ``kill_grace`` + 5 s after it was stopped
(or after its leader exited) ends as ``unkillable``, its slot freed, and what
is left of it is reaped and removed whenever it finally dies.
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
import struct
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
from gevent.event import Event
from gevent.hub import Waiter

from .. import metrics
from ..config import Settings
from ..policy.allowlist import Allowlist
from ..states import STATE_FOR_REASON, JobState
from ..store.base import JobLog, Store, UnknownLog
from ..store.jobs import Job
from ..streaming.sse import OutputJSON
from .cgroups import WorkerCgroups
from .jobprocs import JobProcesses
from .pgroups import ProcessGroupRegistry
from .pipes import PipeWatch
from .runas import JobUsers, resolve_job_users
from .spawn import ChildProcess, Pipe, SpawnError, environment_block, start_child

log = logging.getLogger(__name__)

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# The order in which one pump round reads a job's pipes (README: "Order of stdout and stderr").
PIPE_ORDER = ("stdout", "stderr")
_INT = struct.Struct("i")

# How long start() waits for the exec before answering anyway (the start event follows).
START_WAIT = 2.0
# A job not over this long after kill_grace (from its stop, or its leader's exit) is given up on.
UNKILLABLE_AFTER = 5.0


@dataclass(frozen=True)
class Containment:
    """Who a command runs as and what it may consume."""

    uid: int | None = None
    gid: int | None = None
    rlimits: tuple[tuple[int, int], ...] = ()
    users: JobUsers = field(default_factory=JobUsers)  # roles with their own run_as_user
    umask: int = 0o022
    no_new_privs: bool = True

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
        process = {"umask": int(settings.child_umask, 8), "no_new_privs": settings.no_new_privileges}
        try:
            users = resolve_job_users(settings, os.geteuid() == 0)
        except LookupError as exc:
            raise ValueError(str(exc)) from None
        default = users.default
        if default is None:
            return cls(rlimits=tuple(limits), users=users, **process)
        return cls(default.uid, default.gid, tuple(limits), users, **process)

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


class NoInput(Exception):
    """A job's stdin cannot take input: ``reason`` is ``no_stdin``, ``input_closed`` or ``job_not_running``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class JobRun:
    """A running job's processes and how it is being stopped."""

    job: Job
    procs: JobProcesses | None = None
    pump: OutputPump | None = None
    stop_reason: str | None = None
    stopped_by: str | None = None  # the user who asked for the stop (a cancel), when known
    stopping: Event = field(default_factory=Event)  # a stop was asked for
    started: Event = field(default_factory=Event)  # the launch is over (exec'd, failed, or given up on)
    settled: Event = field(default_factory=Event)  # nothing more to wait for: all gone, or given up on
    done: Event = field(default_factory=Event)  # the final state is recorded
    terminator: gevent.Greenlet | None = None
    timer: gevent.Greenlet | None = None  # the job's timeout, from its spawn
    deadline: float | None = None  # monotonic: given up on if not over by then
    watchdog: object | None = None  # the loop timer for the deadline
    given_up: bool = False
    created: float = field(default_factory=time.monotonic)  # for the spawn latency


class OutputPump:
    """Moves one job's pipe output into its log: pipes -> runner -> job log.

    Each readable pipe is read and its output appended (and so delivered to
    caught-up viewers) right in the hub's io callback; the runner's greenlet
    sleeps until every pipe has ended, the owning viewer is too far behind
    (flow control), or reading failed. A line of output thus costs no greenlet
    switch before it leaves the worker.
    """

    def __init__(self, log_: JobLog, settings: Settings, on_limit: Callable[[], object]) -> None:
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
        self.abandoned = False

    def add(self, fd: int, name: str) -> None:
        """Pump ``fd`` (non-blocking) as the output kind ``name``."""
        self.pipes.register(fd, name)
        self.decoders[name] = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending[name] = b""

    def run(self, wake: tuple[Event, ...]) -> None:
        """Pump until every pipe has ended (in the runner's greenlet)."""
        try:
            while self.pipes and not self.abandoned:
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

    def abandon(self) -> None:
        """Stop for good and append nothing more (the job was given up on); run() returns."""
        self.abandoned = True
        self.pipes.stop()
        if self.waiter is not None:
            gevent.get_hub().loop.run_callback(self.waiter.switch, None)

    def readable(self, fd: int, name: str) -> None:
        """A pipe has output or has ended (called by the hub): one round, every pipe in PIPE_ORDER."""
        if self.abandoned:
            return
        try:
            for pipe_fd, pipe_name in self.pipes.in_order(PIPE_ORDER):
                self._move(pipe_fd, pipe_name)
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
        """What the pipe holds at this moment (up to coalesce_bytes), in one read; and whether it has ended.

        One read, sized by FIONREAD: bytes the child writes after it wait for the next round, after the
        other pipe's (a read loop would pull them ahead of what the other pipe got meanwhile).
        """
        held = _INT.unpack(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        try:
            data = os.read(fd, min(held, self.coalesce) if held > 0 else self.read_size)
        except BlockingIOError:
            return b"", False
        return data, not data

    def _emit(self, name: str, data: bytes, final: bool = False) -> None:
        pending, decoder = self.pending, self.decoders[name]
        if not final and data.isascii() and not pending[name] and not decoder.getstate()[0]:
            # The common case, and the hot path: ASCII needs no decoding, its bytes are its UTF-8. Said with
            # the event, so the history needs no second look at the bytes.
            self.log.append(name, OutputJSON(name, data), data, ascii_out=True)
            return
        raw = pending[name] + data
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
        store: Store,
        allowlist: Allowlist,
        env: dict[str, str],
        registry: ProcessGroupRegistry | None = None,
        containment: Containment | None = None,
        on_finish: Callable[[Job], None] | None = None,
        cgroups: WorkerCgroups | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.allowlist = allowlist
        self.env = env
        self._env_block = environment_block(env)
        self.registry = registry
        self.containment = containment or Containment()
        self.on_finish = on_finish
        self.cgroups = cgroups
        self.runs: dict[str, JobRun] = {}

    # Lifecycle of one job.

    def start(
        self, job: Job, executable: str, role: str | None = None, *, owned: bool = False, paced: bool = False,
    ) -> JobRun:
        """Spawn the job's command (as the user of ``role``, the role that allowed it) in its own greenlet.

        Waits (briefly) for the exec. ``owned``: the job has an owning viewer (GET /run) that it waits for
        rather than drop output the viewer has not read (``owner_progress``, ``release_owner``). ``paced``: a
        run's job, which waits from its start for its run's stream (JobLog.expect_viewer).

        A command that cannot start is recorded (``err`` event, state
        failed_to_start) before this returns, so the caller sees it at once.
        One still not exec'd after START_WAIT (a hung file system) is left to
        its greenlet: the job is listed as running, and its start event follows.
        """
        run = JobRun(job)
        if owned:
            self.store.local_log(job.id).claim_owner()
        elif paced:
            self.store.local_log(job.id).expect_viewer()
        # Listed before the child exists, so that a stop meanwhile is not lost; the timeout runs from now.
        self.runs[job.id] = run
        run.timer = gevent.spawn_later(job.timeout, self.stop, job.id, "timeout")
        try:
            run.procs = self._launch(job, executable, role)
        except Exception as exc:
            self._forget(run)
            self._record_spawn_failure(job, exc if isinstance(exc, OSError) else OSError(0, str(exc)))
            run.started.set()
            run.done.set()
            return run
        gevent.spawn(self._run, run)
        run.started.wait(START_WAIT)
        return run

    def owner_progress(self, job_id: str) -> Callable[[int], None]:
        """What the owning viewer's stream calls with the offset it has sent through (flow control)."""
        return self.store.local_log(job_id).owner_read_through

    def release_owner(self, job_id: str) -> None:
        """The owning viewer is gone: the job never waits for it again."""
        with contextlib.suppress(UnknownLog):
            self.store.local_log(job_id).release_owner()

    def _launch(self, job: Job, executable: str, role: str | None) -> JobProcesses:
        # No shell; stdin /dev/null (or the job's input pipe); the stripped environment; the job's cgroup;
        # own session; every other fd closed; the run-as user with only its group; then the rlimits,
        # no_new_privs and the death signal (setting the user would clear it). See app/process/spawn.py.
        contain = self.containment
        uid, gid = contain.user_for(role)
        cgroup = None
        if self.cgroups is not None:
            try:
                cgroup = self.cgroups.create(job.id)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot make its cgroup: {exc.strerror}") from None
        procs_fd = cgroup.open_procs() if cgroup is not None else -1
        try:
            starting = start_child(
                executable,
                job.argv,
                self._env_block,
                cwd=self.settings.child_cwd,
                uid=uid,
                gid=gid,
                rlimits=contain.rlimits,
                pdeathsig=signal.SIGKILL,
                umask=contain.umask,
                no_new_privs=contain.no_new_privs,
                cgroup_procs=procs_fd,
                merge_stderr=job.stderr == "merged",
                stdin_pipe=job.stdin,
            )
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
        finally:
            if procs_fd >= 0:
                os.close(procs_fd)
        return JobProcesses(starting, cgroup)

    def _run(self, run: JobRun) -> None:
        job = run.job
        try:
            proc = self._wait_for_exec(run)
            if proc is None:
                return
            gevent.spawn(self._watch_leader, run)
            try:
                self._pump(run)
                run.settled.wait()
            finally:
                proc.close_pipes()
            if not run.given_up:
                self._record_exit(run)
        except BaseException:
            log.exception("runner for job %s failed", job.id)
            if run.procs is not None:
                run.procs.kill()
            if not self.store.get_job(job.id).finished:
                self.store.local_log(job.id).append(
                    "exit", {"type": "exit", "reason": "killed", "code": None, "signal": None}
                )
                self._finished(self.store.finish_job(job.id, state=JobState.KILLED, reason="killed",
                                                     error="internal runner error"))
            raise
        finally:
            self._forget(run)
            run.started.set()
            run.done.set()

    def _wait_for_exec(self, run: JobRun) -> ChildProcess | None:
        """The exec'd leader, recorded as started; None if the command did not start (recorded too)."""
        job, procs = run.job, run.procs
        try:
            proc = procs.starting.wait()
        except OSError as exc:
            procs.release()
            if run.given_up:
                return None
            if exc.errno == errno.ECANCELED and run.stop_reason:
                self._record_stopped_before_start(run)
            else:
                self._record_spawn_failure(job, exc)
            return None
        procs.started(proc)
        if run.given_up:  # while the launch was stuck: reap it and remove what is left, in the background
            proc.close_pipes()
            gevent.spawn(self._watch_leader, run)
            return None
        metrics.observe_spawn(time.monotonic() - run.created)
        if self.registry is not None:
            self.registry.add(proc.pid)
        self.store.mark_started(job.id, proc.pid)
        self.store.local_log(job.id).append(
            "start", {"type": "start", "job": job.id, "pid": proc.pid, "argv": list(job.argv)}
        )
        run.started.set()
        return proc

    def _forget(self, run: JobRun) -> None:
        """The job is over for the runner: no timeout, no deadline, not listed."""
        if run.timer is not None:
            run.timer.kill(block=False)
        if run.watchdog is not None:
            run.watchdog.stop()
            run.watchdog.close()
            run.watchdog = None
        if self.runs.get(run.job.id) is run:
            del self.runs[run.job.id]

    def _record_spawn_failure(self, job: Job, exc: OSError) -> None:
        if getattr(exc, "_failed_chdir", False):
            reason, message = "spawn_failed", f"cannot enter working directory {exc.filename}: {exc.strerror}"
        elif isinstance(exc, SpawnError) and exc.stage != "execute":
            # Containment could not be set up (user, limits, ...): never a property of the command.
            reason, message = "spawn_failed", f"{job.argv[0]}: cannot {exc.stage}: {exc.strerror}"
        elif not isinstance(exc, SpawnError):
            reason, message = "spawn_failed", f"{job.argv[0]}: {exc.strerror or exc}"
        else:
            reason, message = _spawn_failure_reason(exc), f"{job.argv[0]}: {exc.strerror or exc}"
        self.store.local_log(job.id).append(
            "err", {"type": "error", "out": message, "reason": reason, "errno": exc.errno}
        )
        self._finished(self.store.finish_job(job.id, state=JobState.FAILED_TO_START, reason=reason, error=message))

    def _record_stopped_before_start(self, run: JobRun) -> None:
        self._record_end(run, run.stop_reason, "stopped before its command started")

    def _finished(self, job: Job) -> None:
        if self.on_finish is not None:
            try:
                self.on_finish(job)
            except Exception:
                log.exception("on_finish hook failed for job %s", job.id)

    def _record_exit(self, run: JobRun) -> None:
        proc = run.procs.leader
        killed = proc.returncode is not None and proc.returncode < 0
        reason = run.stop_reason or ("killed" if killed else "exited")
        error = f"stopped before its command started: it was stuck trying to {proc.stuck_at}" if proc.stuck_at else None
        self._record_end(run, reason, error)

    def _record_end(self, run: JobRun, reason: str, error: str | None) -> None:
        """The exit event and the final state, with the leader's status and the job's usage where known."""
        job, leader = run.job, run.procs.leader
        code = leader.returncode if leader is not None else None
        signal_number = -code if code is not None and code < 0 else None
        exit_code = code if signal_number is None else None
        ended = time.time()
        usage = run.procs.usage()
        payload = _exit_payload(
            reason, exit_code, signal_number, round(ended - (job.started_at or ended), 6), usage, error
        )
        cancelled_by = run.stopped_by if reason == "cancelled" else None
        if cancelled_by is not None:
            payload["cancelled_by"] = cancelled_by
        self.store.local_log(job.id).append("exit", payload)
        finished = self.store.finish_job(
            job.id,
            state=STATE_FOR_REASON[reason],
            reason=reason,
            exit_code=exit_code,
            signal=signal_number,
            signal_name=payload["signal_name"],
            error=error,
            ended_at=ended,
            cpu_seconds=usage[0],
            peak_memory_bytes=usage[1],
            cancelled_by=cancelled_by,
        )
        self._finished(finished)

    # Reading the pipes.

    def _pump(self, run: JobRun) -> None:
        proc = run.procs.leader
        pump = run.pump = OutputPump(
            self.store.local_log(run.job.id), self.settings, lambda: self.stop(run.job.id, "output_limit")
        )
        for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            if pipe is None:  # merged into stdout
                continue
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            # A pipe as large as one event lets a flooding command write a whole
            # event's worth between two reads (Linux's default is 64 KiB).
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, self.settings.coalesce_bytes)
            pump.add(fd, name)
        if run.given_up:  # given up on while it started
            pump.abandon()
        try:
            pump.run(wake=(run.stopping, run.settled))
        finally:
            # The pump holds the job's log: the run lives in reference cycles (its greenlets, the output
            # limit's callback), and through it the log and all its output would outlive the job's release
            # from memory until the cyclic collector's next full pass (RSS grew with each finished job).
            run.pump = None

    # Stopping and reaping.

    def _watch_leader(self, run: JobRun) -> None:
        """Wait for the leader; end what it left behind; once all is gone, remove what the job leaves."""
        procs = run.procs
        procs.leader.wait()
        self._arm_deadline(run)  # the rest of the job has that long to go too
        if procs.alive():  # it left something behind
            if not run.stopping.is_set():
                self._terminate(run)
            pause = 0.02
            while procs.alive():
                gevent.sleep(pause)
                pause = min(pause * 2, 1.0)
        run.settled.set()
        run.done.wait()  # the exit recorded: its usage was read from the cgroup
        if self.registry is not None:
            self.registry.remove(procs.pgid)
        for _ in range(50):  # an emptied cgroup may be busy for a moment
            if procs.release():
                break
            gevent.sleep(0.1)
        else:
            log.warning("job %s: its cgroup could not be removed", run.job.id)

    def stop(self, job_id: str, reason: str, by: str | None = None) -> bool:
        """Stop a running job: SIGTERM to all of it, SIGKILL after kill_grace. False if not running.

        ``by``: the user who asked (a cancel), recorded as the job's ``cancelled_by``.
        """
        run = self.runs.get(job_id)
        if run is None or run.stopping.is_set() or run.procs is None:
            return False
        leader = run.procs.leader
        if leader is None or leader.returncode is None:
            run.stop_reason = reason
            run.stopped_by = by
        run.stopping.set()
        self.store.mark_stopping(job_id)
        self._arm_deadline(run)
        run.terminator = gevent.spawn(self._terminate, run)
        return True

    # A job's stdin (jobs started with "stdin": true).

    def write_input(self, job_id: str, data: bytes) -> int:
        """Write to a running job's stdin without ever waiting: the bytes written, fewer (or 0) if the pipe filled.

        NoInput if the job has no stdin pipe, its stdin is closed (by us, or by the command), or it is not running.
        """
        pipe = self._stdin(job_id)
        try:
            return os.write(pipe.fileno(), data)
        except BlockingIOError:
            return 0
        except BrokenPipeError:
            pipe.close()
            raise NoInput("input_closed", f"job {job_id} no longer reads its input") from None

    def close_input(self, job_id: str) -> None:
        """Close a running job's stdin: the command reads end-of-file. NoInput as for ``write_input``."""
        self._stdin(job_id).close()

    def _stdin(self, job_id: str) -> Pipe:
        run = self.runs.get(job_id)
        if run is None or run.procs is None or run.given_up:
            raise NoInput("job_not_running", f"job {job_id} is not running")
        pipe = run.procs.starting.stdin
        if pipe is None:
            raise NoInput("no_stdin", f'job {job_id} was not started with "stdin": true')
        if pipe.closed:
            raise NoInput("input_closed", f"job {job_id}'s input is closed")
        return pipe

    def stop_all(self, reason: str) -> None:
        """Stop every running job (server shutdown)."""
        for job_id in list(self.runs):
            self.stop(job_id, reason)

    def wait_all(self, timeout: float) -> None:
        """Wait until every job has been reaped and recorded, up to ``timeout``."""
        gevent.wait([run.done for run in list(self.runs.values())], timeout=timeout)

    def _terminate(self, run: JobRun) -> None:
        procs = run.procs
        procs.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.kill_grace
        while time.monotonic() < deadline:
            if not procs.alive():
                return
            gevent.sleep(0.05)
        procs.kill()

    def _arm_deadline(self, run: JobRun) -> None:
        """The job must be over within kill_grace + UNKILLABLE_AFTER from now (or an earlier deadline)."""
        if run.done.is_set():
            return
        deadline = time.monotonic() + self.settings.kill_grace + UNKILLABLE_AFTER
        if run.deadline is not None and run.deadline <= deadline:
            return
        run.deadline = deadline
        if run.watchdog is not None:
            run.watchdog.stop()
            run.watchdog.close()
        run.watchdog = gevent.get_hub().loop.timer(deadline - time.monotonic())
        run.watchdog.start(lambda: gevent.spawn(self._give_up, run))

    def _give_up(self, run: JobRun) -> None:
        """The job is still not over at its deadline: record it as unkillable and free its slot."""
        job = run.job
        if run.done.is_set() or job.finished:
            return
        run.given_up = True
        why = run.procs.what_is_left()
        grace = self.settings.kill_grace
        log.warning("job %s is unkillable: %s within %.0f s of being told to end; giving up on it (its slot is "
                    "free; what is left is reaped when it dies)", job.id, why, grace + UNKILLABLE_AFTER)
        if run.pump is not None:
            run.pump.abandon()
        self._forget(run)
        self._record_end(run, "unkillable", f"unkillable: {why}")
        run.settled.set()
        run.started.set()
        run.done.set()


def _exit_payload(
    reason: str,
    code: int | None,
    signal_number: int | None,
    duration: float | None,
    usage: tuple[float | None, int | None],
    error: str | None,
) -> dict:
    payload = {
        "type": "exit",
        "reason": reason,
        "code": code,
        "signal": signal_number,
        "signal_name": _signal_name(signal_number) if signal_number else None,
        "duration": duration,
        "cpu_seconds": None if usage[0] is None else round(usage[0], 6),
        "peak_memory_bytes": usage[1],
    }
    if error:
        payload["error"] = error
    return payload
