"""The redis-server the Redis store's rows run on (Debian's), as deployed: AOF, fsync'd every second.

A unix socket and an append-only file in bench/out; stopped by pid.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import redis

from .tools import OUT, BenchError, cpu_seconds, rss_bytes


class RedisProcess:
    """One redis-server for a bench run."""

    def __init__(self, name: str = "redis") -> None:
        self.dir = OUT / name
        self.socket = self.dir / "r.sock"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The servers' store_url."""
        return f"unix://{self.socket}"

    def __enter__(self) -> RedisProcess:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.socket), "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("redis-server exited: " + (self.dir / "redis.log").read_text(errors="replace"))
            try:
                client.ping()
                return self
            except (redis.ConnectionError, OSError):
                time.sleep(0.05)
        raise BenchError("redis-server did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def cpu(self) -> float:
        """CPU seconds redis-server has used so far."""
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def rss(self) -> int:
        """redis-server's resident memory now."""
        assert self.proc is not None
        return rss_bytes(self.proc.pid)
