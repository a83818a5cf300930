"""Running the C clients and relays, and the asyncio client for short jobs."""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .sse import parse_events, split_response
from .tools import REPO, BenchError, helper


@dataclass
class SinkResult:
    """What ``sink`` reports: CLOCK_REALTIME ns at connect, first byte, end of body and close; bytes read."""

    connect_ns: int
    first_ns: int
    body_end_ns: int  # the terminating chunk of a chunked response arrived (else: the close)
    end_ns: int
    bytes: int

    @property
    def seconds(self) -> float:
        """From connect to the end of the response body."""
        return (self.body_end_ns - self.connect_ns) / 1e9


def get_request(host: str, port: int, path: str) -> str:
    """An HTTP/1.1 GET that asks the server to close when the response ends."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"


def run_path(argv: list[str]) -> str:
    """GET /run?command=... for an argv (no quoting needed: bench argv items have no spaces)."""
    return "/run?command=" + quote(" ".join(argv), safe="")


def sink(port: int, outfile: Path, request: str = "", *, stamped: bool = False, wait_close: bool = False,
         timeout: float = 300, host: str = "127.0.0.1") -> SinkResult:
    """Run the C client to completion: by default it leaves when a chunked body ends, as curl does."""
    flags = ("t" if stamped else "") + ("" if wait_close else "c")
    argv = [helper("sink"), host, str(port), str(outfile), request, flags]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"sink failed ({done.returncode}): {done.stderr.strip()}")
    return SinkResult(*map(int, done.stdout.split()))


class Relay:
    """A relay process serving one connection with a command's output: the C raw relay or the Python SSE one."""

    def __init__(self, kind: str, argv: list[str]) -> None:
        python_relay = [sys.executable, "-m", "bench.sse_relay"]
        command = [helper("relay"), *argv] if kind == "raw" else [*python_relay, *argv]
        self.proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            self.proc.kill()
            raise BenchError(f"{kind} relay did not start")
        self.port = int(line)

    def finish(self) -> None:
        """Wait for the relay to exit after its one connection."""
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise BenchError("relay did not exit") from None
        if code != 0:
            raise BenchError(f"relay exited with {code}")


# Short jobs over GET /run from asyncio clients.


@dataclass
class ShortJobs:
    """Outcome of many short /run jobs."""

    done: int = 0
    seconds: float = 0.0
    first_event_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    lost_output: int = 0  # exit arrived without the "hi\n" before it
    errors: list[str] = field(default_factory=list)
    client_cpu: float = 0.0  # seconds of CPU this (client) process used

    @property
    def rate(self) -> float:
        """Jobs per second."""
        return self.done / self.seconds if self.seconds else 0.0


async def _short_job(host: str, port: int, request: bytes, result: ShortJobs) -> None:
    started = time.perf_counter_ns()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    chunks: list[bytes] = []
    first_event = None
    seen = b""
    tail = b""
    while True:
        data = await reader.read(65536)
        if not data:
            break
        chunks.append(data)
        if first_event is None:
            seen += data
            if b"\nevent: " in seen:
                first_event = time.perf_counter_ns()
        tail = (tail + data)[-7:]
        if tail == b"\r\n0\r\n\r\n":
            break  # the response is complete: leave, as curl does, rather than wait for the server to close
    ended = time.perf_counter_ns()
    writer.close()
    raw = b"".join(chunks)
    try:
        status, _, body = split_response(raw)
    except BenchError as exc:
        result.errors.append(str(exc))
        return
    if status != 200:
        result.errors.append(f"status {status}: {raw[-300:]!r}")
        return
    got_hi = False
    for event in parse_events(body):
        if event.kind == "stdout" and '"out":"hi\\n"' in event.data:
            got_hi = True
        elif event.kind == "exit":
            if not got_hi:
                result.lost_output += 1
            if '"code":0' not in event.data:
                result.errors.append(f"exit: {event.data}")
            break
        elif event.kind in ("err", "stderr"):
            result.errors.append(f"{event.kind}: {event.data}")
    else:
        result.errors.append(f"no exit event in {raw[-300:]!r}")
    result.done += 1
    result.first_event_ms.append(((first_event or ended) - started) / 1e6)
    result.total_ms.append((ended - started) / 1e6)


async def _short_jobs(host: str, port: int, total: int, clients: int, seconds: float) -> ShortJobs:
    result = ShortJobs()
    request = get_request(host, port, run_path(["echo", "hi"])).encode()
    remaining = total
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal remaining
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            try:
                await _short_job(host, port, request, result)
            except OSError as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")

    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = time.perf_counter() - started
    result.client_cpu = time.process_time() - cpu
    return result


def short_jobs(host: str, port: int, total: int, clients: int, seconds: float = 3600) -> ShortJobs:
    """Run ``total`` echo jobs (or as many as start within ``seconds``) through GET /run from ``clients`` at once."""
    return asyncio.run(_short_jobs(host, port, total, clients, seconds))


# Idle subscribers: the C epoll client.


class Subscribers:
    """``count`` SSE subscribers held by one fanout process (connecting from ``source``, if given)."""

    def __init__(self, host: str, port: int, path: str, count: int, messages: int, outfile: Path,
                 source: str | None = None, *, connect: bool = True) -> None:
        self.count, self.messages, self.outfile = count, messages, outfile
        self.proc = subprocess.Popen(
            [helper("fanout"), host, str(port), path, str(count), str(messages), str(outfile),
             *([source] if source else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.started = time.monotonic()
        if connect:
            self.await_connected()

    def await_connected(self) -> None:
        """Wait for the process to say how many subscriptions it opened."""
        line = self._line(330)
        self.connect_seconds = time.monotonic() - self.started
        parts = line.split()
        if len(parts) != 4 or parts[0] != "connected":
            self.proc.kill()
            raise BenchError(f"fanout client: {line!r}")
        self.connected = int(parts[1])

    def _line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            raise BenchError("fanout client stopped answering")
        return self.proc.stdout.readline().strip()

    def wait(self, seq: int, timeout_ms: int, quiet_ms: int) -> int:
        """Wait until every subscriber has message ``seq`` (or the timeouts); how many have it."""
        self.proc.stdin.write(f"wait {seq} {timeout_ms} {quiet_ms}\n")
        line = self._line(timeout_ms / 1000 + 30)
        parts = line.split()
        if parts[:2] != ["got", str(seq)]:
            raise BenchError(f"fanout client: {line!r}")
        return int(parts[2])

    def finish(self) -> tuple[list[list[int]], int]:
        """Close every subscription; latencies [subscriber][message] in ns (-1: never), and the server's closes."""
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        return self.finish_quit()

    def finish_quit(self) -> tuple[list[list[int]], int]:
        """``finish`` once "quit" is sent."""
        line = self._line(60)
        self.proc.wait(30)
        if not line.startswith("closed "):
            raise BenchError(f"fanout client: {line!r}")
        data = memoryview(self.outfile.read_bytes()).cast("q")
        os.unlink(self.outfile)
        m = self.messages
        return [list(data[i * m : (i + 1) * m]) for i in range(self.count)], int(line.split()[1])


class SubscriberGroup:
    """``count`` SSE subscribers over ``processes`` fanout processes, each connecting from its own loopback
    address (127.0.0.2 and up): past one process's open-files limit and one address's ephemeral ports.
    The same interface as ``Subscribers``; the latencies of its processes one after the other."""

    def __init__(self, host: str, port: int, path: str, count: int, messages: int, outfile: Path,
                 processes: int) -> None:
        shares = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
        self.count, self.messages = count, messages
        started = time.monotonic()
        self.members = [
            Subscribers(host, port, path, share, messages, outfile.with_name(f"{outfile.name}.{i}"),
                        f"127.0.0.{i + 2}", connect=False)
            for i, share in enumerate(shares)
        ]
        try:
            for member in self.members:
                member.await_connected()
        except BaseException:
            for member in self.members:
                member.proc.kill()
            raise
        self.connect_seconds = time.monotonic() - started
        self.connected = sum(member.connected for member in self.members)

    def wait(self, seq: int, timeout_ms: int, quiet_ms: int) -> int:
        """Wait until every subscriber of every process has message ``seq`` (or the timeouts); how many have it."""
        for member in self.members:
            member.proc.stdin.write(f"wait {seq} {timeout_ms} {quiet_ms}\n")
        got = 0
        for member in self.members:
            line = member._line(timeout_ms / 1000 + 30)
            parts = line.split()
            if parts[:2] != ["got", str(seq)]:
                raise BenchError(f"fanout client: {line!r}")
            got += int(parts[2])
        return got

    def finish(self) -> tuple[list[list[int]], int]:
        """Close every subscription; latencies [subscriber][message] in ns (-1: never), and the server's closes."""
        latencies: list[list[int]] = []
        closed = 0
        for member in self.members:
            member.proc.stdin.write("quit\n")
            member.proc.stdin.flush()
        for member in self.members:
            found, gone = member.finish_quit()
            latencies += found
            closed += gone
        return latencies, closed
