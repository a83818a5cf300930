"""Everything one job started, wherever it went, signalled, killed, checked and measured as one.

A job's processes are, in turn: the child its spawner thread is launching
(reached through the pidfd the kernel gave at the clone, before it has even
exec'd); then its leader, with the process group the leader made; and, where
the host allows, the job's cgroup, which holds all of them and whatever left
the group with ``setsid()``. The runner decides when; this decides how.
"""

from __future__ import annotations

import contextlib
import os
import signal

from .cgroups import JobCgroup
from .spawn import ChildProcess, Starting


class JobProcesses:
    """One job's processes: its launch, then its leader and process group, and its cgroup if it has one."""

    def __init__(self, starting: Starting, cgroup: JobCgroup | None = None) -> None:
        self.starting = starting
        self.cgroup = cgroup
        self.leader: ChildProcess | None = None

    def started(self, leader: ChildProcess) -> None:
        """The child has exec'd: from now on the job is its leader's group (and its cgroup)."""
        self.leader = leader

    @property
    def pgid(self) -> int | None:
        """The leader's process group (its pid: the leader made it with setsid)."""
        return self.leader.pid if self.leader is not None else None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to every process of the job (while it starts: to the child, which gets it at its exec)."""
        if self.leader is None:
            self.starting.kill(sig)
        elif self.cgroup is not None:
            self.cgroup.signal_each(sig)
        else:
            self._signal_group(sig)

    def kill(self) -> None:
        """SIGKILL every process of the job, setsid() escapees too where there is a cgroup."""
        if self.leader is None:
            self.starting.kill(signal.SIGKILL)
            return
        if self.cgroup is not None:
            self.cgroup.kill()
        else:
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        # The group's id cannot be reused while the leader is unreaped or any member lives.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def alive(self) -> bool:
        """Whether anything of the job may still run (a child still starting counts)."""
        if self.leader is None or self.leader.returncode is None:
            return True
        if self.cgroup is not None:
            return self.cgroup.populated()
        return self._group_alive()

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def what_is_left(self) -> str:
        """Why the job is not over yet, for the log and the job's error."""
        if self.leader is None:
            return f"its command never started: stuck trying to {self.starting.stage}"
        if self.leader.returncode is None:
            return f"its main process {self.leader.pid} did not die"
        if self.cgroup is not None and self.cgroup.populated():
            pids = " ".join(map(str, self.cgroup.pids()[:10]))
            return f"processes in its cgroup did not die (pids {pids})"
        if self.cgroup is None and self._group_alive():
            return f"processes in its process group {self.pgid} did not die"
        if self.cgroup is None:
            return ("its output is held open by processes outside its process group (escaped with setsid?); "
                    "with cgroups they would have been killed")
        return "its output is held open by processes outside its cgroup"

    def usage(self) -> tuple[float | None, int | None]:
        """(CPU seconds, peak memory in bytes) of all of it; None where not measurable (no cgroup)."""
        if self.cgroup is None:
            return None, None
        return self.cgroup.usage()

    def release(self) -> bool:
        """Remove what the job leaves behind once over (its cgroup); False while something remains."""
        return self.cgroup is None or self.cgroup.remove()
