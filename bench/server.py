"""The real server under test: gunicorn -k gevent (our worker class) on a free loopback port, stopped by pid."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .tools import OUT, REPO, SHELL_NOFILE, VENV_BIN, BenchError, free_port, helper

# Per-user policy limits lifted for measuring (every capacity setting is left as shipped): the bench is
# one anonymous client starting thousands of jobs and publishing as fast as it can. Said in RESULTS.md.
LIFTED_POLICY = {
    "SSECMD_RATE_LIMIT_PER_MINUTE": "0",  # job starts per user
    "SSECMD_PUBLISH_RATE_PER_MINUTE": "0",  # messages per user
    "SSECMD_MAX_RUNNING_JOBS": "256",
    "SSECMD_MAX_RUNNING_JOBS_PER_USER": "256",
    "SSECMD_MAX_SUBSCRIPTIONS_PER_USER": "100000",
    "SSECMD_AUDIT_LOG": "",
}


def _shell_limits() -> None:
    """In the server's process, before exec: the open-files limits the suite was started with."""
    resource.setrlimit(resource.RLIMIT_NOFILE, SHELL_NOFILE)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def _runtime_root() -> Path:
    """Where the workers' process-group registry goes: tmpfs, as deployed (/run), if this machine has one."""
    # deploy/sse-commander.service puts run_dir on /run, a tmpfs; a disk-backed directory
    # costs a file creation per job that a deployment does not pay.
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and os.access(shm, os.W_OK) and _filesystem_type(shm) == "tmpfs":
            return shm / f"ssecmd-bench-{os.getuid()}"
    except OSError:
        pass
    return OUT / "run"


def _filesystem_type(path: Path) -> str:
    best, kind = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        mount = fields[1]
        if str(path).startswith(mount) and len(mount) > len(best):
            best, kind = mount, fields[2]
    return kind


class Server:
    """One gunicorn master and its workers, set up for measuring rather than for defending."""

    def __init__(
        self, workers: int = 1, name: str = "server", extra: dict[str, str] | None = None, repo: Path | None = None,
        venv_bin: Path | None = None,
    ) -> None:
        # repo/venv_bin: another checkout's server (bench/short_jobs_ab.py); by default this one's.
        self.repo = repo or REPO
        self.workers = workers
        self.port = free_port()
        self.host = "127.0.0.1"
        self.log_path = OUT / "logs" / f"{name}-{self.port}.log"
        self.run_dir = _runtime_root() / str(self.port)
        allowed = " ".join(["echo", helper("writer"), helper("ticker")])
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "SSECMD_ALLOWED_COMMANDS": allowed,
            "SSECMD_RUN_DIR": str(self.run_dir),
            "SSECMD_RUN_AS_USER": "root",  # the helpers live in this checkout
            **LIFTED_POLICY,
            "SSECMD_LOG_LEVEL": "warning",
            "SSECMD_KILL_GRACE": "1",
            # history = true is the shipped default: each server keeps it in its own directory, on a disk.
            "SSECMD_DATA_DIR": str(OUT / "history" / str(self.port)),
            **(extra or {}),
        }
        # gunicorn.conf.py hard-codes accesslog = "-"; the bench's config file is that one with it off.
        # No capacity flags: worker_connections, backlog and the open-files limit are the shipped ones.
        self.args = [
            str((venv_bin or VENV_BIN) / "gunicorn"), "-c", str(self.repo / "bench" / "gunicorn_bench.py"),
            "--bind", f"{self.host}:{self.port}", "--workers", str(workers),
            "wsgi:app",
        ]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Server:
        """Start gunicorn and wait until every worker answers /healthz."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(self.args, cwd=self.repo, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, preexec_fn=_shell_limits)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"gunicorn exited early:\n{self.log()}")
            try:
                status, _ = self.request("GET", "/healthz", timeout=1)
                if status == 200 and len(self.worker_pids()) == self.workers:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise BenchError(f"gunicorn did not start:\n{self.log()}")

    def log(self) -> str:
        """What gunicorn has logged so far."""
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The master's workers."""
        assert self.proc is not None
        return _children(self.proc.pid)

    def worker_pid(self) -> int:
        """The one worker (single-worker servers)."""
        pids = self.worker_pids()
        if len(pids) != 1:
            raise BenchError(f"expected one worker, found {pids}")
        return pids[0]

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        """One request on a fresh connection; the status and the JSON body (or raw bytes)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            headers = {}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            try:
                return response.status, json.loads(raw)
            except ValueError:
                return response.status, raw
        finally:
            conn.close()

    def stop(self) -> None:
        """TERM to the master, KILL to whatever is left after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        workers = self.worker_pids()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        # Every server here has a data_dir of its own, never reused: a full bench writes tens of GB of history,
        # which filled this machine's disk over a few runs (and a full disk changes what the next runs measure).
        shutil.rmtree(self.env["SSECMD_DATA_DIR"], ignore_errors=True)

    def capacity(self) -> dict[str, Any]:
        """What the server made of its capacity settings: open-files limit, pool, streams (from /healthz and /proc)."""
        worker = self.worker_pids()[0]
        soft = hard = "?"
        for line in Path(f"/proc/{worker}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
        _, health = self.request("GET", "/healthz", timeout=5)
        warned = re.search(r"open files limit \d+ is too low.*", self.log())  # logged at warning
        return {
            "nofile_soft": soft, "nofile_hard": hard, "shell_nofile": list(SHELL_NOFILE),
            "worker_connections": health.get("worker_connections"), "max_streams": health.get("max_streams"),
            "warning": warned.group(0) if warned else "",
        }

    def problems(self) -> list[str]:
        """Error lines and tracebacks gunicorn logged (the bench runs it at log level warning)."""
        lines = self.log().splitlines()
        return [line for line in lines if "Traceback" in line or "[ERROR]" in line or "[CRITICAL]" in line]
