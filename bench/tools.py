"""Shared helpers: paths, the C helpers, the writer's expected bytes, statistics, limits."""

from __future__ import annotations

import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
OUT = BENCH / "out"
BIN = OUT / "bin"
SOURCES = BENCH / "c"
VENV_BIN = Path(sys.executable).parent


def _scratch() -> Path:
    # Bulk files go to memory when there is room (a container's /dev/shm may be 64 MB), so the
    # client never waits on a disk.
    shm = Path("/dev/shm")
    try:
        stat = os.statvfs(shm)
    except OSError:
        return OUT
    return shm if os.access(shm, os.W_OK) and stat.f_bavail * stat.f_frsize >= 2**30 else OUT


SCRATCH = _scratch()
NOFILE = 200_000  # RLIMIT_NOFILE for the suite and its clients (tens of thousands of sockets)

HELPERS = ("writer", "ticker", "sink", "relay", "fanout")


class BenchError(RuntimeError):
    """A benchmark broke (lost bytes, a crash, a refused request): the harness's result is not to be trusted."""


def helper(name: str) -> str:
    """Absolute path of a compiled C helper."""
    return str(BIN / name)


def build_helpers() -> None:
    """Compile bench/c/*.c into bench/out/bin with the system C compiler, when a source is newer."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise BenchError("no C compiler: install Debian's gcc (make bench installs it)")
    BIN.mkdir(parents=True, exist_ok=True)
    for name in HELPERS:
        source, target = SOURCES / f"{name}.c", BIN / name
        if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
            continue
        subprocess.run([compiler, "-O2", "-Wall", "-o", str(target), str(source)], check=True)


NOFILE_NOTE = ""  # what raise_nofile() could not do
# The limits the suite was started with: the server under test gets these back (bench/server.py),
# so it raises its own soft limit exactly as `make run` does.
SHELL_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE (hard too, as root) for this process and its clients; the new soft limit."""
    global NOFILE_NOTE
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            NOFILE_NOTE = f"raising the hard limit to {want} was refused (no CAP_SYS_RESOURCE)"
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_ALPHABET = "abcdefghijklmnopqrstuvwxyz" * 5
_FILLS = [_ALPHABET[r : r + 88] for r in range(26)]


@cache
def expected_output(size: int) -> bytes:
    """Exactly what ``writer SIZE`` prints (see bench/c/writer.c)."""
    lines = (size + 99) // 100
    fills = _FILLS
    return "".join([f"{i:010d} {fills[i % 26]}\n" for i in range(lines)]).encode()[:size]


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (fraction in 0..1) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def open_sockets(pid: int) -> int:
    """How many sockets a process holds."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_fraction(seconds: float = 0.5) -> float:
    """Share of all CPUs busy (anyone's) over ``seconds``, from /proc/stat."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)
