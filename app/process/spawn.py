"""Starting a contained command without forking the worker, and waiting for it cooperatively.

``start_child()`` hands the command to the C extension ``app.process._spawn``: a
spawner thread clones the child with ``CLONE_VM | CLONE_VFORK`` (glibc's
``posix_spawn`` way: the child borrows the worker's memory only while the
thread that cloned it sleeps) and the child prepares itself with system
calls alone, then execs. The worker's event loop never waits for it; the
greenlet that started it waits, cooperatively, for the launch's status pipe.
What the child gets, in this order:

- stdin ``/dev/null`` (or, asked for, a new pipe whose write end the worker
  keeps, close-on-exec), stdout and stderr on two new pipes (or, merged, both
  on one pipe, so that their order is kept), every other descriptor closed;
- its job's cgroup, when given: it joins before anything that could hang, so
  the cgroup can kill it from then on, and all it forks starts inside;
- default signal dispositions; the umask;
- the working directory; its own session and process group;
- as root only: the run-as user and group, supplementary groups reduced to
  that group;
- then, as that user, the rlimits (soft = hard), ``PR_SET_NO_NEW_PRIVS``
  and ``PR_SET_PDEATHSIG`` (and an exit if the worker already died);
- the worker's signal mask (every signal is blocked until then);
- the executable itself, no shell, with argv and the environment as given.

Until it execs, the child signals nobody when it exits (exit signal 0); the
kernel makes it an ordinary SIGCHLD child at the exec. So a command is reaped
by libev's SIGCHLD handler, like every other child of the worker, and its
status routed by pid (``_Reaper``); a child that died before its exec is
reaped through its pidfd with ``__WALL``. Until it has exec'd, ``Starting.kill()`` reaches it through the pidfd the
kernel gave at the clone, or, if it is not cloned yet, keeps it from ever
running its command.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any

import gevent
from gevent.event import Event

try:
    from . import _spawn
except ImportError as exc:  # pragma: no cover - a checkout where `pip install -e .` has not built it
    raise ImportError(
        f"app.process._spawn is not built ({exc}): run `pip install -e .` (needs gcc and the Python headers)"
    ) from exc

WALL = 0x40000000  # __WALL: wait for children whatever signal they send at exit (here none)

STAGES = {
    _spawn.STAGE_NONE: "start",
    _spawn.STAGE_FDS: "set up the standard streams",
    _spawn.STAGE_CGROUP: "join its cgroup",
    _spawn.STAGE_CHDIR: "enter the working directory",
    _spawn.STAGE_SETSID: "start a session",
    _spawn.STAGE_CREDENTIALS: "switch to the run-as user",
    _spawn.STAGE_RLIMIT: "set a resource limit",
    _spawn.STAGE_NO_NEW_PRIVS: "set no_new_privs",
    _spawn.STAGE_PDEATHSIG: "set the parent-death signal",
    _spawn.STAGE_EXEC: "execute",
    _spawn.STAGE_CANCELLED: "start (stopped before it ran)",
}


class SpawnError(OSError):
    """The child failed before or at execve; ``stage`` says where."""

    stage: str = "execute"
    _failed_chdir: bool = False


class Pipe:
    """Our end of a child's pipe (an output's read end, its stdin's write end): ``fileno()`` and ``close()``."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on closed pipe")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class _Reaper:
    """Exit statuses of the worker's children, routed by pid to whoever waits for them.

    libev's SIGCHLD handler reaps every child of the worker that exits with
    SIGCHLD (every exec'd command, and the orphans the worker adopts as a
    subreaper) and reports it to child watchers; this one watches them all.
    A command that exits before its ``ChildProcess`` exists (its spawner
    thread has not even returned) is found among the launches still starting
    by the pid its child wrote before its exec.
    """

    def __init__(self) -> None:
        loop = gevent.get_hub().loop
        loop.install_sigchld()
        self.waiting: dict[int, ChildProcess] = {}
        self.starting: set[Starting] = set()
        self._watcher = loop.child(0, False, ref=False)
        self._watcher.start(self._reaped)

    def _reaped(self) -> None:
        pid, status = self._watcher.rpid, self._watcher.rstatus
        proc = self.waiting.pop(pid, None)
        if proc is not None:
            proc._reaped(status)
            return
        for starting in self.starting:
            if starting._launch.child_pid() == pid:
                starting._status = status
                return
        # An orphan the worker adopted: nobody waits for it.


_reapers: dict[int, _Reaper] = {}


def _reaper() -> _Reaper:
    hub = gevent.get_hub()
    reaper = _reapers.get(id(hub))
    if reaper is None:
        reaper = _reapers[id(hub)] = _Reaper()
    return reaper


class ChildProcess:
    """A started command: pid, pidfd, stdout/stderr pipes, returncode once reaped, cooperative wait().

    ``stderr`` is None when the command's stderr is merged into its stdout pipe; ``stdin`` is None unless
    the command's stdin is a pipe (then its write end).
    """

    def __init__(
        self, pid: int, pidfd: int, stdout: Pipe, stderr: Pipe | None, stage: int = _spawn.STAGE_EXEC,
        status: int | None = None, stdin: Pipe | None = None,
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.returncode: int | None = None
        # Where the child was if it never exec'd (killed while it prepared itself), else None.
        self.stuck_at = None if stage == _spawn.STAGE_EXEC else STAGES.get(stage, "start")
        self._exited = Event()
        self._reaper = _reaper()
        self._watcher = None
        if status is not None:  # reaped already, while its launch was finishing
            self._reaped(status)
            return
        self._reaper.waiting[pid] = self
        # A child that never exec'd sends no SIGCHLD, so libev never reaps it: its pidfd turns
        # readable when it exits, and it is reaped here. (It holds a reference on the loop: a
        # running command is pending work.)
        self._watcher = gevent.get_hub().loop.io(pidfd, 1)
        self._watcher.start(self._pidfd_readable)

    def _pidfd_readable(self) -> None:
        self._stop_watching()
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG | WALL)
        except ChildProcessError:
            return  # an exec'd command, reaped by libev: the reaper reports it
        if pid:
            self._reaper.waiting.pop(self.pid, None)
            self._reaped(status)

    def _stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None

    def _reaped(self, status: int) -> None:
        self._stop_watching()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self.returncode = os.waitstatus_to_exitcode(status)
        self._exited.set()

    def send_signal(self, sig: int) -> bool:
        """Signal the process itself (not its group) through its pidfd; False if it is gone."""
        if self.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, sig)
            return True
        return False

    def close_pipes(self) -> None:
        """Close every pipe: output and stdin (errors on closing are of no interest any more)."""
        _close_all((self.stdout, self.stderr, self.stdin))

    def wait(self, timeout: float | None = None) -> int | None:
        """The returncode (negative: killed by that signal), waiting for the exit up to ``timeout``."""
        self._exited.wait(timeout)
        return self.returncode


class Starting:
    """A command between ``start_child()`` and its exec: a launch in a spawner thread."""

    def __init__(
        self, launch, stdout_fd: int, stderr_fd: int, executable: bytes, cwd: bytes | None, stdin_fd: int = -1
    ) -> None:
        self._launch = launch
        self.stdout = Pipe(stdout_fd)
        self.stderr = Pipe(stderr_fd) if stderr_fd >= 0 else None
        self.stdin = Pipe(stdin_fd) if stdin_fd >= 0 else None
        self._executable = executable
        self._cwd = cwd
        self._status: int | None = None  # reaped by libev before the launch was finished
        self._reaper = _reaper()
        self._reaper.starting.add(self)

    @property
    def stage(self) -> str:
        """How far the child has got."""
        return STAGES.get(self._launch.stage(), "start")

    def kill(self, sig: int) -> bool:
        """Signal the child through its pidfd (blocked signals wait for the exec), or keep it from ever running."""
        return self._launch.kill(sig)

    def wait(self) -> ChildProcess:
        """Wait cooperatively until the child has exec'd: its ChildProcess; SpawnError (reaped) or OSError if not.

        If this greenlet is killed meanwhile, the child is killed and reaped in the background.
        """
        try:
            self._wait_finished()
        except BaseException:
            self.abandon()
            raise
        return self._finish()

    def _wait_finished(self) -> None:
        if self._launch.finished():
            return
        hub = gevent.get_hub()
        watcher = hub.loop.io(self._launch.fileno(), 1)
        try:
            hub.wait(watcher)  # end-of-file: the child has exec'd or exited
        finally:
            watcher.close()

    def _child(self) -> ChildProcess | None:
        """The finished launch's child (None if none was cloned), its pipes handed over."""
        launch = self._launch
        self._reaper.starting.discard(self)
        pid, stage, _ = launch.result()
        pidfd = launch.take_pidfd()
        launch.close()
        if pid < 0:
            return None
        return ChildProcess(pid, pidfd, self.stdout, self.stderr, stage, self._status, self.stdin)

    def _finish(self) -> ChildProcess:
        _, stage, error = self._launch.result()
        proc = self._child()
        if proc is None:
            self._close_pipes()
            raise OSError(error, f"cannot start a child: {os.strerror(error)}")
        if error:
            proc.close_pipes()
            proc.wait()
            filename = self._cwd if stage == _spawn.STAGE_CHDIR else self._executable
            exc = SpawnError(error, os.strerror(error), os.fsdecode(filename or b""))
            exc.stage = STAGES.get(stage, "start")
            exc._failed_chdir = stage == _spawn.STAGE_CHDIR
            raise exc
        return proc

    def abandon(self) -> None:
        """Nobody will use this command: kill it, and reap it in the background once its launch is over."""
        self.kill(signal.SIGKILL)
        self._close_pipes()
        gevent.spawn(self._reap_abandoned)

    def _reap_abandoned(self) -> None:
        self._wait_finished()
        proc = self._child()
        if proc is not None:
            proc.wait()

    def _close_pipes(self) -> None:
        _close_all((self.stdout, self.stderr, self.stdin))


def _close_all(pipes: Sequence[Pipe | None]) -> None:
    for pipe in pipes:
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else os.fsencode(value)


def environment_block(env: Mapping[str, str]) -> tuple[bytes, ...]:
    """``NAME=value`` entries for execve (build once, reuse for every spawn)."""
    block = []
    for name, value in env.items():
        name_b, value_b = _b(name), _b(value)
        if not name_b or b"=" in name_b or b"\0" in name_b or b"\0" in value_b:
            raise ValueError(f"invalid environment variable {name!r}")
        block.append(name_b + b"=" + value_b)
    return tuple(block)


def start_child(
    executable: str | bytes,
    argv: Sequence[str | bytes],
    env_block: tuple[bytes, ...],
    *,
    cwd: str | bytes | None,
    uid: int | None = None,
    gid: int | None = None,
    rlimits: Sequence[tuple[int, int]] = (),
    pdeathsig: int = 0,
    umask: int | None = None,
    no_new_privs: bool = False,
    cgroup_procs: int = -1,
    merge_stderr: bool = False,
    stdin_pipe: bool = False,
) -> Starting:
    """Start ``executable`` with ``argv`` contained as the module docstring says, without waiting for the exec.

    ``cgroup_procs`` is a cgroup's ``cgroup.procs`` open for writing (the caller may close it at once).
    ``merge_stderr``: stderr goes to the stdout pipe (the result's ``stderr`` is None).
    ``stdin_pipe``: stdin is a pipe, its write end the result's ``stdin``, non-blocking (else ``/dev/null``).
    """
    if uid is not None and gid is None:
        raise ValueError("a run-as uid needs a gid")
    executable_b, cwd_b = _b(executable), (_b(cwd) if cwd else None)
    out_fd, err_fd, in_fd, launch = _spawn.start(
        executable_b,
        tuple(_b(arg) for arg in argv),
        env_block,
        cwd_b,
        -1 if uid is None else uid,
        -1 if gid is None else gid,
        tuple((int(resource), int(value)) for resource, value in rlimits),
        pdeathsig,
        -1 if umask is None else umask,
        no_new_privs,
        cgroup_procs,
        merge_stderr,
        stdin_pipe,
    )
    if in_fd >= 0:
        os.set_blocking(in_fd, False)  # a write to a full pipe must never block the worker
    return Starting(launch, out_fd, err_fd, executable_b, cwd_b, in_fd)


def spawn(
    executable: str | bytes, argv: Sequence[str | bytes], env_block: tuple[bytes, ...], **options: Any
) -> ChildProcess:
    """``start_child()`` and wait for the exec: the ChildProcess, or SpawnError/OSError."""
    return start_child(executable, argv, env_block, **options).wait()
