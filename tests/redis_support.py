"""A real redis-server for tests: its own temp dir and unix socket, no persistence unless asked, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis


class RedisServer:
    """One redis-server (Debian's) on a unix socket in a fresh temp dir."""

    def __init__(self, *, appendonly: bool = False, directory: Path | None = None) -> None:
        self.dir = directory or Path(tempfile.mkdtemp(prefix="ssec-redis-"))  # short: socket paths max 107 bytes
        self.socket = self.dir / "r.sock"
        self.appendonly = appendonly
        self.extra: list[str] = []  # a config file to start with (the command line's options win over it)
        self.proc: subprocess.Popen | None = None
        self.password: str | None = None

    @property
    def url(self) -> str:
        """The store_url of this server."""
        return f"unix://{self.socket}"

    def start(self) -> RedisServer:
        """Start it (``--port 0``: no TCP at all) and wait until it answers PING."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        # Persistence as asked, unless a config file (``extra``) says what it is.
        persistence = [] if self.extra else ["--save", "", "--appendonly", "yes" if self.appendonly else "no"]
        self.proc = subprocess.Popen(
            [binary, *self.extra, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--dir", str(self.dir), *persistence, "--daemonize", "no", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text(errors='replace')}")
            with contextlib.suppress(redis.ConnectionError, OSError):
                if self.client().ping():
                    return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def client(self) -> redis.Redis:
        """A client of this server."""
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5, password=self.password)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it by pid (SIGTERM: a clean shutdown; SIGKILL: a crash)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def remove(self) -> None:
        """Stop it and delete its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
