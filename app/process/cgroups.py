"""cgroup v2 for jobs: where this server may make cgroups (decided once, at start-up), and one cgroup per job.

A job in a cgroup of its own cannot leave it: whatever it forks, ``setsid()``
included, starts inside, ``cgroup.kill`` ends all of it at once, and
``cpu.stat`` / ``memory.peak`` measure all of it. Where the host allows it:

- **delegated**: systemd gave the service its cgroup (``Delegate=yes``; systemd
  marks it with the ``trusted.delegate`` attribute). The master moves itself
  into a leaf, ``supervisor/``, since a cgroup that hands controllers to its
  children may hold no process itself; jobs go beside it, in
  ``<service>/worker-<pid>/job-<id>``.
- **mount**: the server runs in the root cgroup of a writable cgroup2 mount (a
  host whose PID 1 is not systemd, a container with a cgroup namespace of its
  own): ``<mount>/sse-commander-<master pid>/worker-<pid>/job-<id>``.
- otherwise **process groups**: the fallback, which a ``setsid()`` escapes.

``memory.max`` and ``pids.max`` apply where the memory and pids controllers
can be enabled for job cgroups; ``cgroup.kill`` (Linux 5.14) is required.

Standard library only: gunicorn's master imports this before forking workers,
which inherit its decision (``server_plan()``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass

CGROUP_SETTINGS = ("auto", "required", "off")
LIMIT_CONTROLLERS = ("memory", "pids")
SUPERVISOR = "supervisor"
DELEGATE_ATTRIBUTES = ("trusted.delegate", "user.delegate")


class CgroupError(RuntimeError):
    """cgroup = required, and this host offers no cgroup for jobs."""


@dataclass(frozen=True)
class CgroupPlan:
    """How this server contains jobs: decided once by the master."""

    mode: str  # "cgroup" or "process_group"
    kind: str = ""  # for cgroups: "delegated" or "mount"
    base: str = ""  # the directory this server makes its cgroups in
    controllers: tuple[str, ...] = ()  # enabled for job cgroups: a subset of LIMIT_CONTROLLERS
    reason: str = ""  # for process groups: why

    @property
    def uses_cgroups(self) -> bool:
        """Whether jobs get cgroups."""
        return self.mode == "cgroup"

    def describe(self) -> str:
        """One line for the start-up log."""
        if not self.uses_cgroups:
            return f"containment: process groups ({self.reason}); a setsid() escapes them"
        limits = ", ".join(f"{name}.max" for name in self.controllers) or "none (no memory or pids controller here)"
        return f"containment: a cgroup per job ({self.kind}) under {self.base}; limits: {limits}"

    def public(self) -> dict:
        """What /healthz shows."""
        if not self.uses_cgroups:
            return {"mode": "process_group", "cgroup": None, "limits": []}
        return {"mode": "cgroup", "cgroup": self.kind, "limits": [f"{name}.max" for name in self.controllers]}


def process_groups(reason: str) -> CgroupPlan:
    """The fallback plan."""
    return CgroupPlan("process_group", reason=reason)


# Reading the host (pure helpers take the file texts).


def cgroup2_mount(mountinfo: str) -> str | None:
    """The cgroup2 mount point in /proc/self/mountinfo text (the unified /sys/fs/cgroup preferred), or None."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) > dash + 1 and fields[dash + 1] == "cgroup2" and fields[3] == "/":
            found.append(_unescape(fields[4]))
    for preferred in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if preferred in found:
            return preferred
    return found[0] if found else None


def _unescape(path: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def own_cgroup(proc_cgroup: str) -> str | None:
    """This process's cgroup v2 path in /proc/self/cgroup text ("/..."), or None on a v1-only host."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def _read(path: str) -> str:
    # Plain system calls: a job's cgroup files are read on every job, and file objects cost more than the read.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _delegated(directory: str) -> bool:
    for name in DELEGATE_ATTRIBUTES:
        with contextlib.suppress(OSError):
            if os.getxattr(directory, name) == b"1":
                return True
    return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# The master's decision.

_server_plan: CgroupPlan | None = None


def server_plan() -> CgroupPlan | None:
    """The plan the master decided at start-up (None outside a server started by gunicorn's master)."""
    return _server_plan


def establish(setting: str, instance: int) -> CgroupPlan:
    """Decide how to contain jobs, make this server's cgroup, and remember the plan for the workers.

    ``instance`` names the cgroup where names must be unique (the master's pid). CgroupError when
    ``setting`` is "required" and cgroups are not available.
    """
    global _server_plan
    plan = process_groups("cgroup = off") if setting == "off" else _discover(instance)
    if setting == "required" and not plan.uses_cgroups:
        raise CgroupError(f"cgroup = required, but {plan.reason}")
    _server_plan = plan
    return plan


def _discover(instance: int) -> CgroupPlan:
    try:
        mount = cgroup2_mount(_read("/proc/self/mountinfo"))
        own = own_cgroup(_read("/proc/self/cgroup"))
    except OSError as exc:
        return process_groups(f"cannot read /proc: {exc.strerror}")
    if mount is None or own is None:
        return process_groups("no cgroup2 hierarchy is mounted")
    own_dir = os.path.normpath(mount + own)
    parent = os.path.dirname(own_dir)
    try:
        if _delegated(own_dir):
            _move_into(own_dir, os.path.join(own_dir, SUPERVISOR))
            return _plan("delegated", own_dir)
        if os.path.basename(own_dir) == SUPERVISOR and _delegated(parent):
            return _plan("delegated", parent)  # already in the leaf (a restart, or systemd's DelegateSubgroup=)
        if own == "/":
            _remove_stale(mount)
            base = os.path.join(mount, f"sse-commander-{instance}")
            os.mkdir(base, 0o755)
            return _plan("mount", base, remove_on_failure=True)
    except OSError as exc:
        return process_groups(f"cannot make cgroups under {mount}: {exc.strerror}")
    return process_groups(f"this server's cgroup {own} is not delegated to it (under systemd: Delegate=yes)")


def _move_into(base: str, leaf: str) -> None:
    """Move every process of ``base`` into its leaf ``leaf`` (made if missing)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(leaf, 0o755)
    for pid in _read(os.path.join(base, "cgroup.procs")).split():
        with contextlib.suppress(ProcessLookupError):
            _write(os.path.join(leaf, "cgroup.procs"), pid)


def _plan(kind: str, base: str, remove_on_failure: bool = False) -> CgroupPlan:
    if not os.path.exists(os.path.join(base, "cgroup.kill")):
        if remove_on_failure:
            os.rmdir(base)
        return process_groups("this kernel has no cgroup.kill (Linux 5.14 or later)")
    return CgroupPlan("cgroup", kind, base, _enable_controllers(base))


def _enable_controllers(directory: str) -> tuple[str, ...]:
    """Enable what LIMIT_CONTROLLERS ``directory`` offers for its children; the ones enabled."""
    offered = _read(os.path.join(directory, "cgroup.controllers")).split()
    wanted = [name for name in LIMIT_CONTROLLERS if name in offered]
    if wanted:
        try:
            _write(os.path.join(directory, "cgroup.subtree_control"), " ".join(f"+{name}" for name in wanted))
        except OSError:  # EBUSY: processes in it (a cgroup namespace's root), so no limits
            return ()
    enabled = _read(os.path.join(directory, "cgroup.subtree_control")).split()
    return tuple(name for name in LIMIT_CONTROLLERS if name in enabled)


def _remove_stale(mount: str) -> None:
    """Remove what servers that died without cleaning up (kill -9) left in ``mount``."""
    with contextlib.suppress(OSError):
        for name in os.listdir(mount):
            prefix, _, pid = name.rpartition("-")
            if prefix == "sse-commander" and pid.isdigit() and not pid_alive(int(pid)):
                remove_tree(os.path.join(mount, name))


# Cleaning up (master side).


def remove_tree(directory: str, wait: float = 2.0) -> bool:
    """Kill everything in a cgroup subtree and remove it; False if something could not be removed in time."""
    if not os.path.isdir(directory):
        return True
    with contextlib.suppress(OSError):
        _write(os.path.join(directory, "cgroup.kill"), "1")
    deadline = time.monotonic() + wait
    for parent, children, _ in os.walk(directory, topdown=False):
        for child in children:
            _rmdir_when_empty(os.path.join(parent, child), deadline)
    return _rmdir_when_empty(directory, deadline)


def _rmdir_when_empty(directory: str, deadline: float) -> bool:
    while True:
        try:
            os.rmdir(directory)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
        time.sleep(0.02)


def worker_dir(plan: CgroupPlan, worker_pid: int) -> str:
    """Where a worker's job cgroups live."""
    return os.path.join(plan.base, f"worker-{worker_pid}")


def release_worker(plan: CgroupPlan, worker_pid: int) -> tuple[int, bool]:
    """After a worker's exit: kill and remove what its jobs left; (processes found, all removed)."""
    directory = worker_dir(plan, worker_pid)
    if not plan.uses_cgroups or not os.path.isdir(directory):
        return 0, True
    found = 0
    for parent, _, _ in os.walk(directory):
        with contextlib.suppress(OSError):
            found += len(_read(os.path.join(parent, "cgroup.procs")).split())
    return found, remove_tree(directory)


def release_server(plan: CgroupPlan) -> bool:
    """At the master's exit: kill and remove every cgroup this server made; False if some remain."""
    if not plan.uses_cgroups:
        return True
    if plan.kind == "mount":
        return remove_tree(plan.base)
    removed = True
    for name in os.listdir(plan.base):
        if name.startswith("worker-"):
            removed = remove_tree(os.path.join(plan.base, name)) and removed
    return removed


# A worker's job cgroups.


class WorkerCgroups:
    """The cgroups of one worker's jobs, with the configured limits."""

    def __init__(self, plan: CgroupPlan, worker_pid: int, memory_max: int = 0, pids_max: int = 0) -> None:
        self.plan = plan
        self.dir = worker_dir(plan, worker_pid)
        self.memory_max = memory_max if "memory" in plan.controllers else 0
        self.pids_max = pids_max if "pids" in plan.controllers else 0
        self._made = False

    def create(self, job_id: str) -> JobCgroup:
        """A new cgroup for a job, limits applied; OSError if it cannot be made."""
        if not self._made:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.dir, 0o755)
            if self.plan.controllers:
                _write(os.path.join(self.dir, "cgroup.subtree_control"),
                       " ".join(f"+{name}" for name in self.plan.controllers))
            self._made = True
        cgroup = JobCgroup(os.path.join(self.dir, f"job-{job_id}"), "memory" in self.plan.controllers)
        os.mkdir(cgroup.path, 0o755)
        try:
            if self.memory_max:
                _write(os.path.join(cgroup.path, "memory.max"), str(self.memory_max))
                _write(os.path.join(cgroup.path, "memory.oom.group"), "1")  # an OOM kill ends the whole job
            if self.pids_max:
                _write(os.path.join(cgroup.path, "pids.max"), str(self.pids_max))
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def close(self) -> None:
        """Remove the worker's directory (once its jobs' cgroups are gone)."""
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)


class JobCgroup:
    """One job's cgroup: join it, signal and kill everything in it, measure it, remove it."""

    def __init__(self, path: str, has_memory: bool = False) -> None:
        self.path = path
        self.has_memory = has_memory  # memory.peak exists (the memory controller is enabled for it)

    def open_procs(self) -> int:
        """``cgroup.procs`` open for writing: a child writes "0" to it to join."""
        return os.open(os.path.join(self.path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)

    def pids(self) -> list[int]:
        """The processes in it now."""
        try:
            return [int(pid) for pid in _read(os.path.join(self.path, "cgroup.procs")).split()]
        except FileNotFoundError:
            return []

    def populated(self) -> bool:
        """Whether any process (a zombie excepted) is still in it."""
        try:
            events = _read(os.path.join(self.path, "cgroup.events"))
        except FileNotFoundError:
            return False
        return "populated 1" in events

    def signal_each(self, sig: int) -> None:
        """Send ``sig`` to every process in it, each through a pidfd checked to be still in it."""
        for pid in self.pids():
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue  # gone
            try:
                # The pidfd pins the process: if it is still alive after this read, the read was about it.
                if self._contains(pid):
                    signal.pidfd_send_signal(pidfd, sig)
            except OSError:
                pass
            finally:
                os.close(pidfd)

    def _contains(self, pid: int) -> bool:
        try:
            text = _read(f"/proc/{pid}/cgroup")
        except OSError:
            return False
        own = own_cgroup(text)
        return own is not None and self.path.endswith(own) and own != "/"

    def kill(self) -> None:
        """SIGKILL everything in it, forks in flight included (cgroup.kill)."""
        with contextlib.suppress(FileNotFoundError):
            _write(os.path.join(self.path, "cgroup.kill"), "1")

    def usage(self) -> tuple[float | None, int | None]:
        """(CPU seconds, peak memory in bytes) of everything that ran in it; None where not measurable."""
        cpu = peak = None
        with contextlib.suppress(OSError, ValueError):
            stat = _read(os.path.join(self.path, "cpu.stat"))
            if stat.startswith("usage_usec "):  # the first line, always
                cpu = int(stat[11 : stat.index("\n")]) / 1e6
        if self.has_memory:
            with contextlib.suppress(OSError, ValueError):  # memory.peak: Linux 5.19
                peak = int(_read(os.path.join(self.path, "memory.peak")))
        return cpu, peak

    def remove(self) -> bool:
        """Remove it (False while processes remain in it)."""
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True
