"""Starting a contained command without forking the worker, and waiting for it cooperatively.

``spawn()`` runs the C extension ``app._spawn`` (clone with CLONE_VM, raw
system calls in the child, execve): the worker is neither copied nor
suspended. Its greenlet waits, cooperatively, until the child has exec'd;
the worker serves others meanwhile. What the child gets:

- the executable itself, no shell; argv and the environment as given (the
  runner builds a stripped one);
- stdin ``/dev/null``, stdout and stderr on two new pipes, every other
  descriptor closed;
- its own session and process group;
- the working directory;
- as root only: the run-as user and group, supplementary groups reduced to
  that group (raw setgroups/setresgid/setresuid: glibc's wrappers are not
  safe in such a child of a threaded process);
- then, as that user, the rlimits (soft = hard) and PR_SET_PDEATHSIG, and an
  exit if the worker already died;
- default signal dispositions and the worker's signal mask.

A failure in the child is an ``OSError`` here, raised once the failed child
has been reaped and before anything else is recorded, with ``_failed_chdir``
set when the working directory was the problem (as gevent's subprocess does).

``ChildProcess`` is the little of ``subprocess.Popen`` the runner uses: the
pid, the two pipes, ``returncode`` and a cooperative ``wait()``, fed by a
libev child watcher (the worker's SIGCHLD handler reaps every child).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping, Sequence

import gevent
from gevent.event import Event

try:
    from . import _spawn
except ImportError as exc:  # pragma: no cover - a checkout where `pip install -e .` has not built it
    raise ImportError(
        f"app._spawn is not built ({exc}): run `pip install -e .` (needs gcc and the Python headers)"
    ) from exc

_STAGES = {
    _spawn.STAGE_FDS: "set up the standard streams",
    _spawn.STAGE_CHDIR: "enter the working directory",
    _spawn.STAGE_SETSID: "start a session",
    _spawn.STAGE_CREDENTIALS: "switch to the run-as user",
    _spawn.STAGE_RLIMIT: "set a resource limit",
    _spawn.STAGE_PDEATHSIG: "set the parent-death signal",
    _spawn.STAGE_EXEC: "execute",
}


class SpawnError(OSError):
    """The child failed before or at execve; ``stage`` says where."""

    stage: str = "execute"
    _failed_chdir: bool = False


class Pipe:
    """The read end of a child's output pipe: ``fileno()`` and ``close()``."""

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


class ChildProcess:
    """A spawned command: pid, stdout/stderr pipes, returncode once reaped, cooperative wait()."""

    def __init__(self, pid: int, stdout_fd: int, stderr_fd: int) -> None:
        self.pid = pid
        self.stdout = Pipe(stdout_fd)
        self.stderr = Pipe(stderr_fd)
        self.returncode: int | None = None
        self._exited = Event()
        # Started before this greenlet yields: libev reaps children only while the loop runs,
        # so the exit of even a very short command reaches this watcher. It holds a reference
        # on the loop: a running command is pending work.
        self._watcher = gevent.get_hub().loop.child(pid, False)
        self._watcher.start(self._on_exit)

    def _on_exit(self) -> None:
        watcher = self._watcher
        watcher.stop()
        self.returncode = os.waitstatus_to_exitcode(watcher.rstatus)
        self._exited.set()

    def close_pipes(self) -> None:
        """Close both output pipes (errors on closing are of no interest any more)."""
        for pipe in (self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                pipe.close()

    def wait(self, timeout: float | None = None) -> int | None:
        """The returncode (negative: killed by that signal), waiting for the exit up to ``timeout``."""
        self._exited.wait(timeout)
        return self.returncode


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


def spawn(
    executable: str | bytes,
    argv: Sequence[str | bytes],
    env_block: tuple[bytes, ...],
    *,
    cwd: str | bytes | None,
    uid: int | None = None,
    gid: int | None = None,
    rlimits: Sequence[tuple[int, int]] = (),
    pdeathsig: int = 0,
) -> ChildProcess:
    """Start ``executable`` with ``argv`` contained as the module docstring says; OSError if it cannot."""
    hub = gevent.get_hub()
    hub.loop.install_sigchld()
    if uid is not None and gid is None:
        raise ValueError("a run-as uid needs a gid")
    pid, out_fd, err_fd, launch = _spawn.start(
        _b(executable),
        tuple(_b(arg) for arg in argv),
        env_block,
        _b(cwd) if cwd else None,
        -1 if uid is None else uid,
        -1 if gid is None else gid,
        tuple((int(resource), int(value)) for resource, value in rlimits),
        pdeathsig,
    )
    proc = ChildProcess(pid, out_fd, err_fd)
    try:
        watcher = hub.loop.io(launch.fileno(), 1)
        try:
            hub.wait(watcher)  # end-of-file: the child has exec'd or exited
        finally:
            watcher.close()
    except BaseException:
        # Whoever started it is gone (a kill, a timeout): so is the command.
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        launch.result()
        proc.close_pipes()
        raise
    stage, error = launch.result()
    if stage:
        proc.close_pipes()
        proc.wait()
        filename = _b(cwd).decode(errors="replace") if stage == _spawn.STAGE_CHDIR else os.fsdecode(_b(executable))
        exc = SpawnError(error, os.strerror(error), filename)
        exc.stage = _STAGES.get(stage, "start")
        exc._failed_chdir = stage == _spawn.STAGE_CHDIR
        raise exc
    return proc
