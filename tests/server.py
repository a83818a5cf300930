"""A real gunicorn -k gevent server for tests: started on a free loopback port, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PYTHON = os.path.realpath(sys.executable)
HELPERS = REPO / "tests" / "helpers"

# The defaults plus this interpreter, so tests can write exact bytes with small helper scripts.
TEST_ALLOWED = "echo printf ls date sleep seq cat true false yes env ping " + PYTHON


def server_defaults() -> dict[str, str]:
    """The SSECMD_* settings every test server runs with unless a test says otherwise."""
    return {
        "SSECMD_ALLOWED_COMMANDS": TEST_ALLOWED,
        "SSECMD_KILL_GRACE": "1",
        "SSECMD_LOG_LEVEL": "debug",
        # Most tests run helpers from this checkout, which may not be readable by
        # 'nobody'; tests/test_containment.py covers the unprivileged default.
        "SSECMD_RUN_AS_USER": "root",
        "SSECMD_RATE_LIMIT_PER_MINUTE": "0",
        "SSECMD_PUBLISH_RATE_PER_MINUTE": "0",
        "SSECMD_LOGIN_ATTEMPTS_PER_MINUTE": "0",
    }


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def helper(name: str) -> str:
    """Path of a helper script in tests/helpers."""
    return str(HELPERS / name)


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float, name: str, log: Callable[[], str]) -> None:
    """Wait until GET ``url`` answers 200; RuntimeError with ``log()`` if ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{log()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not start:\n{log()}")


class GunicornServer:
    """One gunicorn master with its workers, configured through SSECMD_* variables."""

    def __init__(self, tmp_path: Path, settings: dict[str, str] | None = None, *, workers: int = 1,
                 graceful_timeout: float = 10, extra_env: dict[str, str] | None = None,
                 test_defaults: bool = True, nofile: tuple[int, int] | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.run_dir = tmp_path / "run"
        self.log_path = tmp_path / f"gunicorn-{self.port}.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "SSECMD_RUN_DIR": str(self.run_dir),
            # Every test server keeps its history in its own directory, never in the user's home.
            "SSECMD_DATA_DIR": str(tmp_path / f"data-{self.port}"),
        }
        if test_defaults:  # False: the shipped defaults, as the README's examples use them
            env.update(server_defaults())
        env.update(settings or {})
        env.update(extra_env or {})
        self.env = env
        self.args = [
            str(VENV_BIN / "gunicorn"), "-c", str(REPO / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
            "--graceful-timeout", str(graceful_timeout), "wsgi:app",
        ]
        self.nofile = nofile  # (soft, hard) RLIMIT_NOFILE to start gunicorn with, as a login shell would
        self.proc: subprocess.Popen | None = None

    def start(self) -> GunicornServer:
        """Start gunicorn and wait until /healthz answers."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the server
        limits = self.nofile
        preexec = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limits)) if limits else None
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=preexec)
        wait_healthy(self.proc, self.url("/healthz"), 20, "gunicorn", self.log)
        return self

    def refused(self, timeout: float = 20) -> str:
        """Run gunicorn expecting it to refuse to start: its output, once it has exited non-zero.

        Fails the test if it keeps running (a worker boot loop, or no refusal at all).
        """
        proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in children_of(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
            output, _ = proc.communicate()
            raise AssertionError(f"gunicorn kept running:\n{output.decode(errors='replace')}") from None
        text = output.decode(errors="replace")
        assert proc.returncode != 0, text
        assert "Traceback" not in text, text
        assert "Booting worker" not in text, text  # refused by the master, before any worker
        return text

    def url(self, path: str) -> str:
        """Absolute URL for a path on this server."""
        return self.base_url + path

    def log(self) -> str:
        """Everything gunicorn has logged so far."""
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        """The master's pid."""
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """Pids of the master's current workers."""
        return children_of(self.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Signal the master and wait for it; SIGKILL as a last resort."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in self.worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def _stat_fields() -> list[tuple[int, list[str]]]:
    """(pid, the /proc/<pid>/stat fields after the command name) for every process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        found.append((int(entry), stat[stat.rindex(")") + 2:].split()))
    return found


def children_of(pid: int) -> list[int]:
    """Direct children of a process, from /proc."""
    return [child for child, fields in _stat_fields() if int(fields[1]) == pid]


def process_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, Z, ...), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is ``pgid`` (zombies included)."""
    return [member for member, fields in _stat_fields() if int(fields[2]) == pgid]


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
