"""The benchmarks, and the run that ties them together: ``python -m bench [--smoke]``."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import clients, fleet, history
from .clients import Relay, SubscriberGroup, Subscribers, get_request, run_path, sink
from .console_flood import LATE_MS, TICK_MS, console_flood
from .profiler import Profile, hot_spots, py_spy
from .redis_server import RedisProcess
from .server import LIFTED_POLICY, Server
from .sse import check_job_stream, parse_events, read_stamped, split_response, stamped_events
from .tools import (
    OUT,
    REPO,
    SCRATCH,
    BenchError,
    busy_fraction,
    cpu_seconds,
    expected_output,
    helper,
    open_sockets,
    percentile,
    rss_bytes,
)

MB = 1e6


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is."""

    throughput_bytes: int
    throughput_repeats: int
    latency_samples: int
    latency_interval_us: int
    latency_rounds: int
    spawn_sequential: int
    spawn_parallel: int
    spawn_clients: int
    fanout: tuple[int, ...]
    fanout_multi: int
    messages: int
    spawn_floor: int
    workers: tuple[int, ...] = (2, 4)
    flood_rounds: int = 5
    flood_seconds: float = 10
    # Redis: subscribers over 4 workers, held by this many client processes (each from its own 127.0.0.N).
    redis_many: int = 40_000
    redis_many_clients: int = 4


FULL = Sizes(200_000_000, 3, 500, 5000, 3, 300, 4000, 20, (2000, 10_000), 2000, 20, 300)
SMOKE = Sizes(5_000_000, 1, 50, 5000, 1, 20, 50, 20, (100, 200), 200, 5, 20, flood_rounds=1, flood_seconds=2,
              redis_many=300, redis_many_clients=2)


@dataclass
class Row:
    """One line of the results table."""

    name: str
    value: str
    target: str = ""
    verdict: str = ""


@dataclass
class Results:
    """Everything measured in one run."""

    smoke: bool
    rows: list[tuple[str, list[Row]]] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    profiles: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    background: list[float] = field(default_factory=list)  # CPU busy between benchmarks (other processes)

    def section(self, title: str) -> list[Row]:
        """Start a group of rows (and note how busy the machine is without us)."""
        self.background.append(busy_fraction(0.5))
        rows: list[Row] = []
        self.rows.append((title, rows))
        return rows

    def judge(self, passed: bool) -> str:
        """PASS/MISS, or nothing in a smoke run (which asserts nothing about numbers)."""
        if self.smoke:
            return "-"
        return "PASS" if passed else "MISS"


def _attempt(results: Results, rows: list[Row], label: str, work: Callable[[], None]) -> None:
    """Run one benchmark; a broken one becomes a FAIL row instead of ending the run."""
    try:
        work()
    except Exception as exc:
        detail = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        results.failures.append(f"{label}: {detail}")
        rows.append(Row(label, detail.splitlines()[0][:90] if detail else "error", "", "FAIL"))
        with open(OUT / "errors.log", "a") as fh:
            fh.write(f"--- {label}\n{traceback.format_exc()}\n")
        print(f"  FAIL {label}: {detail}", file=sys.stderr)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _us(ns: float) -> str:
    return f"{ns / 1000:.0f}"


# Throughput.


def throughput_server(server: Server, size: int, mode: str, viewer: Server | None = None) -> dict:
    """One job writes ``size`` bytes; the C client reads it over GET /run or /jobs/<id>/events (from
    ``viewer``, another server on the same Redis, if given)."""
    outfile = SCRATCH / f"ssecmd-bench-{server.port}-{mode}.out"
    worker = server.worker_pids()[0]
    argv = [helper("writer"), str(size)]
    cpu = cpu_seconds(worker)
    if mode == "run":
        result = sink(server.port, outfile, get_request(server.host, server.port, run_path(argv)))
        seconds = result.seconds
    else:
        posted = time.time_ns()
        status, job = server.request("POST", "/jobs", {"argv": argv})
        if status != 201:
            raise BenchError(f"POST /jobs: {status} {job}")
        path = f"/jobs/{job['id']}/events"
        reader = viewer or server
        result = sink(reader.port, outfile, get_request(reader.host, reader.port, path))
        seconds = (result.end_ns - posted) / 1e9
    cpu = cpu_seconds(worker) - cpu
    try:
        status, _, body = split_response(outfile.read_bytes())
    finally:
        outfile.unlink()
    if status != 200:
        raise BenchError(f"status {status}")
    delivery = check_job_stream(parse_events(body), expected_output(size))
    if delivery.problems:
        raise BenchError(f"{mode}: " + "; ".join(delivery.problems))
    if mode == "run" and delivery.missed_bytes:
        raise BenchError(f"GET /run lost {delivery.missed_bytes} bytes")
    return {
        "job_id": None if mode == "run" else job["id"],
        "mb_s": size / seconds / MB,
        "seconds": seconds,
        "wire_bytes": result.bytes,
        "events": delivery.stdout_events,
        "missed_bytes": delivery.missed_bytes,
        "worker_cpu": cpu / seconds,
    }


def throughput_relay(kind: str, size: int) -> dict:
    """The same output through the raw C relay or the minimal SSE relay, read by the same client."""
    relay = Relay(kind, [helper("writer"), str(size)])
    outfile = SCRATCH / f"ssecmd-bench-relay-{kind}.out"
    request = "" if kind == "raw" else get_request("127.0.0.1", relay.port, "/")
    result = sink(relay.port, outfile, request)
    relay.finish()
    try:
        raw = outfile.read_bytes()
    finally:
        outfile.unlink()
    if kind == "raw":
        if raw != expected_output(size):
            raise BenchError(f"raw relay: {len(raw)} bytes differ from the {size} written")
    else:
        _, _, body = split_response(raw)
        delivery = check_job_stream(parse_events(body), expected_output(size))
        if not delivery.ok:
            raise BenchError("SSE relay: " + "; ".join(delivery.problems))
    return {"mb_s": size / result.seconds / MB, "seconds": result.seconds, "wire_bytes": result.bytes}


def generator_to_devnull(size: int) -> dict:
    """The generator alone, writing to /dev/null."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([helper("writer"), str(size)], stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - started)
    return {"mb_s": size / best / MB, "seconds": best}


# Latency.


def latency(target: Server | str, samples: int, interval_us: int) -> dict:
    """A ticker prints CLOCK_REALTIME every interval; write-to-arrival at the client socket, in ns."""
    argv = [helper("ticker"), str(samples), str(interval_us)]
    outfile = SCRATCH / "ssecmd-bench-latency.out"
    delays: list[int] = []
    if isinstance(target, Server):
        sink(target.port, outfile, get_request(target.host, target.port, run_path(argv)), stamped=True)
    else:
        relay = Relay(target, argv)
        request = "" if target == "raw" else get_request("127.0.0.1", relay.port, "/")
        sink(relay.port, outfile, request, stamped=True)
        relay.finish()
    try:
        if target == "raw":
            data, ends, stamps = read_stamped(str(outfile))
            position = 0
            for index, stamp in enumerate(stamps):
                while True:
                    newline = data.find(b"\n", position, ends[index])
                    if newline < 0:
                        break
                    delays.append(stamp - int(data[position:newline]))
                    position = newline + 1
        else:
            events, arrivals = stamped_events(str(outfile))
            for event, arrived in zip(events, arrivals, strict=True):
                if event.kind == "stdout":
                    for line in json.loads(event.data)["out"].splitlines():
                        delays.append(arrived - int(line))
    finally:
        outfile.unlink()
    if len(delays) != samples:
        raise BenchError(f"latency: {len(delays)} of {samples} timestamps arrived")
    return {**latency_stats(delays), "delays": delays}


def latency_stats(delays: list[int]) -> dict:
    """p50, p99, max and min of write-to-arrival delays (ns)."""
    return {
        "samples": len(delays),
        "p50_ns": percentile(delays, 0.50),
        "p99_ns": percentile(delays, 0.99),
        "max_ns": max(delays),
        "min_ns": min(delays),
    }


# Short jobs.


def spawn(server: Server, total: int, client_count: int, seconds: float = 15) -> dict:
    """``total`` echo jobs (fewer if ``seconds`` run out) over GET /run from ``client_count`` concurrent clients."""
    pids = server.worker_pids()
    cpu = sum(cpu_seconds(pid) for pid in pids)
    result = clients.short_jobs(server.host, server.port, total, client_count, seconds)
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu
    if result.errors:
        raise BenchError(f"{len(result.errors)} of {total} short jobs failed, e.g. {result.errors[0]}")
    if not result.done:
        raise BenchError("no short job completed")
    return {
        "jobs": result.done,
        "jobs_s": result.rate,
        "first_event_p50_ms": percentile(result.first_event_ms, 0.5),
        "first_event_p99_ms": percentile(result.first_event_ms, 0.99),
        "job_p50_ms": percentile(result.total_ms, 0.5),
        "lost_output": result.lost_output,
        "client_cpu": result.client_cpu / result.seconds,
        "worker_cpu": cpu / result.seconds,
    }


def close_delay(server: Server, count: int) -> dict:
    """How long after a finished GET /run response the server closes a ``Connection: close`` connection."""
    outfile = SCRATCH / "ssecmd-bench-close.out"
    delays = []
    for _ in range(count):
        result = sink(server.port, outfile, get_request(server.host, server.port, run_path(["echo", "hi"])),
                      wait_close=True)
        delays.append((result.end_ns - result.body_end_ns) / 1e6)
    outfile.unlink()
    return {"p50_ms": percentile(delays, 0.5), "max_ms": max(delays), "all_ms": delays}


def python_reference() -> dict:
    """This machine's single-core Python speed on the server's own inner loop: JSON-encode 256 KiB of output."""
    text = expected_output(262144).decode()
    best = float("inf")
    for _ in range(30):
        started = time.perf_counter()
        json.dumps({"type": "stdout", "out": text}, ensure_ascii=False, separators=(",", ":"))
        best = min(best, time.perf_counter() - started)
    return {"json_mb_s": len(text) / best / MB}


def spawn_floor(count: int) -> dict:
    """Sequential echo spawns from one Python process (no server)."""
    done = subprocess.run([sys.executable, "-m", "bench.spawnfloor", str(count)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


# Fan-out.


def _publish(server: Server, channel: str, seq: int) -> None:
    status, body = server.request("POST", f"/channels/{channel}/messages", {"data": {"seq": seq, "t": time.time_ns()}})
    if status != 201:
        raise BenchError(f"publish: {status} {body}")


def fanout(server: Server, count: int, messages: int, profile: Path | None = None, processes: int = 1) -> dict:
    """``count`` idle subscribers on one channel (held by ``processes`` client processes); ``messages`` messages
    published one after another."""
    single = server.workers == 1
    timeout_ms, quiet_ms = (60_000, 2000) if single or count > 10_000 else (4000, 500)
    warm = Subscribers(server.host, server.port, "/channels/warmup/events", 8, 1, SCRATCH / "ssecmd-warm.lat")
    _publish(server, "warmup", 1)
    warm.wait(1, 5000, 500)
    warm.finish()
    time.sleep(0.5)
    pids = server.worker_pids()
    rss_before = {pid: rss_bytes(pid) for pid in pids}
    sockets_before = {pid: open_sockets(pid) for pid in pids}
    channel = f"bench-{count}-{server.port}"
    path, outfile = f"/channels/{channel}/events", SCRATCH / f"ssecmd-fanout-{server.port}.lat"
    if processes > 1:
        subscribers: Subscribers | SubscriberGroup = SubscriberGroup(server.host, server.port, path, count, messages,
                                                                     outfile, processes)
    else:
        subscribers = Subscribers(server.host, server.port, path, count, messages, outfile)
    time.sleep(1.0 if count > 1000 else 0.3)
    rss_after = {pid: rss_bytes(pid) for pid in pids}
    per_worker = [open_sockets(pid) - sockets_before[pid] for pid in pids]
    reached = []
    with Profile(pids[0], profile) if profile else _nothing():
        for seq in range(1, messages + 1):
            _publish(server, channel, seq)
            reached.append(subscribers.wait(seq, timeout_ms, quiet_ms))
            time.sleep(0.05)
    time.sleep(0.2)
    latencies, closed = subscribers.finish()
    connected = subscribers.connected
    delivered = [value for row in latencies for value in row if value >= 0]
    to_all = []
    for seq in range(messages):
        column = [row[seq] for row in latencies if row[seq] >= 0]
        if column:
            to_all.append((len(column), max(column)))
    complete = [slowest for n, slowest in to_all if n >= connected]
    return {
        "subscribers": count,
        "connected": connected,
        "closed_by_server": closed,
        "connect_seconds": subscribers.connect_seconds,
        "rss_per_subscriber": (sum(rss_after.values()) - sum(rss_before.values())) / max(connected, 1),
        "rss_before": sum(rss_before.values()),
        "rss_after": sum(rss_after.values()),
        "subscribers_per_worker": per_worker,
        "delivered_fraction": len(delivered) / (count * messages),
        "messages_to_all": len(complete),
        "reach_all_p50_ns": statistics.median(complete) if complete else None,
        "reach_reached_p50_ns": statistics.median(slowest for _, slowest in to_all) if to_all else None,
        "delivery_p50_ns": percentile(delivered, 0.5) if delivered else None,
        "delivery_p99_ns": percentile(delivered, 0.99) if delivered else None,
        "reached_per_message": reached,
    }


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# The run.


def wait_for_quiet(limit: float = 0.15, patience: float = 120) -> float:
    """Wait (up to ``patience`` s) until other processes use less than ``limit`` of the CPUs; the last reading."""
    deadline = time.monotonic() + patience
    busy = busy_fraction(1.0)
    while busy > limit and time.monotonic() < deadline:
        _say(f"the machine is {busy:.0%} busy with other work; waiting for it to calm down ...")
        time.sleep(4)
        busy = busy_fraction(1.0)
    return busy


def run(smoke: bool, profile: bool) -> Results:
    """Every benchmark, in order; returns the results (failures included)."""
    sizes = SMOKE if smoke else FULL
    results = Results(smoke=smoke)
    if not smoke:
        results.background.append(wait_for_quiet())
    numbers = results.numbers
    size_text = f"{sizes.throughput_bytes / MB:.0f} MB"

    # One worker, with the machine's limits measured in between (same conditions for both).
    expected_output(sizes.throughput_bytes)  # built once, outside every timed path
    limit_rows = results.section("Machine limits (same run, interleaved with the server's runs)")
    _say("one worker and the machine's limits: throughput, latency, spawn ...")
    with Server(1, "one-worker") as server:
        numbers["server_capacity"] = server.capacity()
        # Warm up: the first requests import and allocate lazily.
        throughput_server(server, 1_000_000, "run")
        clients.short_jobs(server.host, server.port, 10, 1)
        throughput_rows = results.section("Throughput (1 worker)")
        latency_rows = results.section("Latency (1 worker, GET /run)")

        def throughput() -> None:
            size = sizes.throughput_bytes
            runs: dict[str, list[dict]] = {kind: [] for kind in ("devnull", "raw", "sse", "run", "events")}
            for _ in range(sizes.throughput_repeats):
                runs["devnull"].append(generator_to_devnull(size))
                runs["raw"].append(throughput_relay("raw", size))
                runs["sse"].append(throughput_relay("sse", size))
                runs["run"].append(throughput_server(server, size, "run"))
                runs["events"].append(throughput_server(server, size, "events"))
            median = {kind: sorted(found, key=lambda r: r["mb_s"])[len(found) // 2] for kind, found in runs.items()}
            spread = {kind: "/".join(f"{r['mb_s']:.0f}" for r in found) for kind, found in runs.items()}
            for kind, found in runs.items():
                numbers[f"throughput_{kind}"] = {**median[kind], "all_mb_s": [r["mb_s"] for r in found]}
            of = f"median of {sizes.throughput_repeats}"
            limit_rows.append(Row(f"generator -> /dev/null ({size_text}; {of}: {spread['devnull']})",
                                  f"{median['devnull']['mb_s']:.0f} MB/s"))
            limit_rows.append(Row(f"raw loopback relay (C: pipe -> TCP, same client; {of}: {spread['raw']})",
                                  f"{median['raw']['mb_s']:.0f} MB/s"))
            limit_rows.append(Row(f"minimal SSE relay (Python+gevent, JSON, chunked; {of}: {spread['sse']})",
                                  f"{median['sse']['mb_s']:.0f} MB/s"))
            best = median["run"]
            throughput_rows.append(Row(f"GET /run, {size_text} in 100-byte lines ({of}: {spread['run']})",
                                       f"{best['mb_s']:.0f} MB/s, worker CPU {best['worker_cpu']:.0%}",
                                       ">= 350 MB/s", results.judge(best["mb_s"] >= 350)))
            share = best["mb_s"] / median["raw"]["mb_s"]
            throughput_rows.append(Row("  ... as a share of the raw loopback relay", f"{share:.0%}", ">= 45%",
                                       results.judge(share >= 0.45)))
            events = median["events"]
            gap = f", {events['missed_bytes']} bytes skipped by design (gap)" if events["missed_bytes"] else ""
            throughput_rows.append(Row(f"GET /jobs/<id>/events, detached job ({of}: {spread['events']})",
                                       f"{events['mb_s']:.0f} MB/s, worker CPU {events['worker_cpu']:.0%}{gap}"))

        _attempt(results, throughput_rows, "throughput", throughput)

        def latencies() -> None:
            pooled: dict[str, list[int]] = {"raw": [], "sse": [], "server": []}
            for _ in range(sizes.latency_rounds):
                for kind in pooled:
                    target = server if kind == "server" else kind
                    pooled[kind] += latency(target, sizes.latency_samples, sizes.latency_interval_us)["delays"]
            found = {kind: latency_stats(delays) for kind, delays in pooled.items()}
            for kind, stats in found.items():
                numbers[f"latency_{kind}"] = stats
            rounds = f"{sizes.latency_rounds} x {sizes.latency_samples}" if sizes.latency_rounds > 1 else str(
                sizes.latency_samples)
            for kind, label in (("raw", "latency via raw relay"), ("sse", "latency via minimal SSE relay")):
                stats = found[kind]
                limit_rows.append(Row(f"{label} ({rounds} lines; p50 / p99 / max)",
                                      f"{_us(stats['p50_ns'])} / {_us(stats['p99_ns'])} / {_us(stats['max_ns'])} us"))
            stats = found["server"]
            label = f"{rounds} lines, one per {sizes.latency_interval_us // 1000} ms"
            latency_rows.append(Row(f"{label}: p50", f"{_us(stats['p50_ns'])} us", "<= 200 us",
                                    results.judge(stats["p50_ns"] <= 200_000)))
            latency_rows.append(Row(f"{label}: p99", f"{_us(stats['p99_ns'])} us", "<= 400 us",
                                    results.judge(stats["p99_ns"] <= 400_000)))
            latency_rows.append(Row(f"{label}: max", f"{_us(stats['max_ns'])} us"))

        _attempt(results, latency_rows, "latency", latencies)

        def limits_spawn() -> None:
            numbers["python_reference"] = reference = python_reference()
            limit_rows.append(Row("Python speed: json.dumps of 256 KiB of 100-byte lines (best of 30)",
                                  f"{reference['json_mb_s']:.0f} MB/s"))
            floor = spawn_floor(sizes.spawn_floor)
            numbers["spawn_floor"] = floor
            limit_rows.append(Row("spawn floor: echo from one Python process, sequential",
                                  f"{floor['vfork']:.0f}/s (vfork), {floor['fork_preexec']:.0f}/s (fork + preexec_fn)"))

        _attempt(results, limit_rows, "limits: spawn", limits_spawn)
        rows = results.section("Short jobs (1 worker, GET /run?command=echo hi)")

        def short() -> None:
            one = spawn(server, sizes.spawn_sequential, 1)
            numbers["spawn_sequential"] = one
            rows.append(Row(f"one at a time ({one['jobs']} jobs)",
                            f"{one['jobs_s']:.0f} jobs/s, worker CPU {one['worker_cpu']:.0%}, first event p50 "
                            f"{one['first_event_p50_ms']:.1f} ms p99 {one['first_event_p99_ms']:.1f} ms"))
            many = spawn(server, sizes.spawn_parallel, sizes.spawn_clients)
            numbers["spawn_parallel"] = many
            rows.append(Row(f"{sizes.spawn_clients} parallel clients ({many['jobs']} jobs)",
                            f"{many['jobs_s']:.0f} jobs/s, worker CPU {many['worker_cpu']:.0%}, "
                            f"client CPU {many['client_cpu']:.0%}", ">= 500 jobs/s",
                            results.judge(many["jobs_s"] >= 500)))
            rows.append(Row("  ... time to first event p50 / p99",
                            f"{many['first_event_p50_ms']:.1f} / {many['first_event_p99_ms']:.1f} ms"))
            delay = close_delay(server, 5 if smoke else 20)
            numbers["close_delay"] = delay
            rows.append(Row("  ... server's close after the response ends (Connection: close), p50 / max",
                            f"{delay['p50_ms']:.0f} / {delay['max_ms']:.0f} ms"))
            lost = one["lost_output"] + many["lost_output"]
            rows.append(Row("  ... streams that lost output", str(lost), "0", "PASS" if lost == 0 else "FAIL"))
            if lost:
                results.failures.append(f"{lost} short jobs lost their output")

        _attempt(results, rows, "short jobs", short)

        if profile:
            _say("profiling throughput and spawn ...")

            def profile_one_worker() -> None:
                with Profile(server.worker_pid(), OUT / "profile" / "throughput.txt"):
                    for _ in range(2):
                        throughput_server(server, sizes.throughput_bytes, "run")
                with Profile(server.worker_pid(), OUT / "profile" / "spawn.txt"):
                    spawn(server, sizes.spawn_parallel, sizes.spawn_clients)

            _attempt(results, rows, "profile", profile_one_worker)
        _check_log(results, server)

    # One worker: idle subscribers, a fresh server for each size so RSS is clean.
    rows = results.section("Fan-out (1 worker, 20 messages published one after another)"
                           if not smoke else f"Fan-out (1 worker, {sizes.messages} messages)")
    for count in sizes.fanout:
        _say(f"fan-out: {count} subscribers ...")

        def one_fanout(count: int = count) -> None:
            with Server(1, f"fanout-{count}") as server:
                found = fanout(server, count, sizes.messages)
                numbers[f"fanout_{count}"] = found
                _check_log(results, server)
            _fanout_rows(results, rows, found, single=True)
            if found["delivered_fraction"] < 1.0 and smoke:
                raise BenchError(f"{count} subscribers on one worker: only {found['delivered_fraction']:.1%} delivered")

        _attempt(results, rows, f"fan-out {count}", one_fanout)
    if profile:
        _say(f"profiling fan-out to {sizes.fanout[-1]} ...")

        def profile_fanout() -> None:
            with Server(1, "fanout-profile") as server:
                fanout(server, sizes.fanout[-1], sizes.messages, profile=OUT / "profile" / "fanout.txt")

        _attempt(results, rows, "profile fan-out", profile_fanout)

    # Several workers.
    for workers in sizes.workers:
        _say(f"{workers} workers ...")
        rows = results.section(f"{workers} workers")

        def several(workers: int = workers, rows: list[Row] = rows) -> None:
            with Server(workers, f"workers-{workers}") as server:
                clients.short_jobs(server.host, server.port, 20, 4)
                many = spawn(server, sizes.spawn_parallel, sizes.spawn_clients)
                numbers[f"spawn_parallel_{workers}w"] = many
                rows.append(Row(f"short jobs, {sizes.spawn_clients} parallel clients ({many['jobs']} jobs)",
                                f"{many['jobs_s']:.0f} jobs/s, lost output {many['lost_output']}, first event p50 "
                                f"{many['first_event_p50_ms']:.1f} ms p99 {many['first_event_p99_ms']:.1f} ms",
                                ">= 500 jobs/s", results.judge(many["jobs_s"] >= 500)))
                if many["lost_output"]:
                    results.failures.append(f"{workers} workers: {many['lost_output']} short jobs lost their output")
                found = fanout(server, sizes.fanout_multi, sizes.messages)
                numbers[f"fanout_{sizes.fanout_multi}_{workers}w"] = found
                _check_log(results, server)
            _fanout_rows(results, rows, found, single=False)

        _attempt(results, rows, f"{workers} workers", several)

    _say("the Redis store ...")
    rows = results.section("Redis store (`store_url`: redis-server with AOF every second, same run)")
    _attempt(results, rows, "Redis store", lambda: redis_rows(results, rows, sizes))

    _say("a fleet: three hosts on one Redis ...")
    rows = results.section(fleet.TITLE)
    _attempt(results, rows, "fleet", lambda: _fleet_rows(results, rows))

    _say("the console under a flood (Chromium) ...")
    rows = results.section("History on disk (1 worker; history = true, the default, against history = false)")
    _attempt(results, rows, "history", lambda: _history_rows(results, rows, sizes))

    rows = results.section("Console under a flood (1 worker, `yes`, the page in a headless Chromium)")

    def flood() -> None:
        found = console_flood(sizes.flood_rounds, sizes.flood_seconds)
        numbers["console_flood"] = found
        what = f"{found['ticks']} ticks over {found['rounds']} x {found['seconds_each']:g} s"
        rows.append(Row(f"{TICK_MS} ms timer late by more than {LATE_MS} ms ({what})",
                        f"{found['late_fraction']:.1%} (p50 {found['late_p50_ms']:.0f} ms, p99 "
                        f"{found['late_p99_ms']:.0f} ms, max {found['late_max_ms']:.0f} ms)",
                        "< 5%", results.judge(found["late_fraction"] < 0.05)))
        rows.append(Row(f"Stop: the click to the badge saying how the job ended, median / max of {found['rounds']}",
                        f"{found['stop_median_ms']:.0f} / {found['stop_max_ms']:.0f} ms", "<= 200 ms",
                        results.judge(found["stop_max_ms"] <= 200)))
        rows.append(Row("  ... to the last line shown (what was in flight, drained), median / max",
                        f"{found['ended_median_ms']:.0f} / {found['ended_max_ms']:.0f} ms"))

    _attempt(results, rows, "console flood", flood)

    if profile:
        for name in ("throughput", "spawn", "fanout"):
            results.profiles[name] = hot_spots(OUT / "profile" / f"{name}.txt")
    results.background.append(busy_fraction(0.5))
    numbers["background_busy"] = results.background
    results.notes += [
        _capacity_note(numbers.get("server_capacity")),
        "Several workers: a channel lives in the worker that served the request, so a message reaches only the "
        "subscribers held by the worker that took the POST (about 1/workers of them; the split is shown). "
        "With the Redis store (its own section) every worker sees every message.",
    ]
    if numbers.get("close_delay", {}).get("p50_ms", 0) > 100:
        results.notes.append(
            "The server closes a finished GET /run connection late (a second io watcher on the client socket "
            "defers gevent's close to the next loop wake-up; bench/repro_close_delay.py). Clients here leave "
            "when the chunked body ends, as curl does; the delay is its own row.")
    if max(results.background) > 0.15:
        results.notes.append(
            f"Other processes kept the machine up to {max(results.background):.0%} busy between benchmarks "
            "(sampled with our servers idle): numbers from this run are lower than on a quiet machine.")
    return results


def _history_rows(results: Results, rows: list[Row], sizes: Sizes) -> None:
    """Issue 17's rows: a large job and short jobs with history on and off, a replay from disk, RSS over time."""
    found = results.numbers.setdefault("history", {})
    hs = history.SMOKE if results.smoke else history.FULL
    size_text = f"{hs.job_bytes / MB:.0f} MB"
    pairs: dict[str, list[tuple[float, float]]] = {"large": [], "short": []}  # (off, on), round by round
    larges, shorts = [], []
    with history.history_server("history-off", False) as off, history.history_server("history-on", True) as on:
        # Both servers up, each round's off and on run back to back (in alternating order), so each ratio
        # compares the same minute of the machine; the rows are the medians of those ratios.
        for round_number in range(hs.rounds):
            order = [(off, False), (on, True)] if round_number % 2 == 0 else [(on, True), (off, False)]
            large = {side: history.large_job(server, hs.job_bytes, throughput_server) for server, side in order}
            short = {side: spawn(server, hs.short_jobs, sizes.spawn_clients) for server, side in order}
            pairs["large"].append((large[False]["mb_s"], large[True]["mb_s"]))
            pairs["short"].append((short[False]["jobs_s"], short[True]["jobs_s"]))
            larges.append(large[True])
            shorts.append(short[True])
        found["rounds"] = pairs
        listed = history.jobs_on_disk(on)
        replayed = found["replay"] = history.replay(on, larges[-1]["job"]["id"], hs.job_bytes)
        rss = found["rss"] = history.rss_after_finished_jobs(on, hs.finished_jobs, hs.finished_job_bytes)
    rounds = f" (median of {hs.rounds})" if hs.rounds > 1 else ""
    share, large_off, large_on = _paired_medians(pairs["large"])
    lost = sum(large["job"]["dropped_bytes"] for large in larges)
    rows.append(Row(f"one {size_text} job, /jobs/<id>/events: history off / on{rounds}",
                    f"{large_off:.0f} / {large_on:.0f} MB/s"))
    rows.append(Row(f"  ... on as a share of off, history bytes lost{_shares(pairs['large'])}",
                    f"{share:.0%}, {lost} lost", ">= 80%, 0 lost", results.judge(share >= 0.8 and lost == 0)))
    short_share, short_off, short_on = _paired_medians(pairs["short"])
    short_jobs = sum(short["jobs"] for short in shorts)
    on_disk = listed >= short_jobs + len(larges)
    rows.append(Row(f"short jobs, {sizes.spawn_clients} parallel clients: history off / on{rounds}",
                    f"{short_off:.0f} / {short_on:.0f} jobs/s"))
    rows.append(Row(f"  ... on as a share of off, every job on disk{_shares(pairs['short'])}",
                    f"{short_share:.0%}, {listed} jobs listed for {short_jobs + len(larges)}", ">= 85%, all",
                    results.judge(short_share >= 0.85 and on_disk and all(s["lost_output"] == 0 for s in shorts))))
    extra = replayed["peak_rss"] - replayed["base_rss"]
    holes = f", {replayed['missed_bytes']} bytes not on disk (gap)" if replayed["missed_bytes"] else ""
    rows.append(Row(f"replay of the finished {size_text} job from disk (/jobs/<id>/events)",
                    f"{replayed['mb_s']:.0f} MB/s{holes}, worker peak RSS +{extra / MB:.1f} MB over "
                    f"{replayed['base_rss'] / MB:.0f} MB", "< +64 MB", results.judge(extra < 64 * MB)))
    growth = (rss["late"] - rss["early"]) / MB
    rows.append(Row(f"worker RSS after {hs.finished_jobs // 10} and {hs.finished_jobs} finished 1 MB jobs",
                    f"{rss['early'] / MB:.0f} / {rss['late'] / MB:.0f} MB ({growth:+.1f} MB)", "flat (< +16 MB)",
                    results.judge(growth < 16)))


def _paired_medians(pairs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """The median of the rounds' on/off ratios, and the median of each side."""
    return (statistics.median(on / off for off, on in pairs), statistics.median(off for off, _ in pairs),
            statistics.median(on for _, on in pairs))


def _shares(pairs: list[tuple[float, float]]) -> str:
    """The rounds' ratios for a row's label, as " (median of 3: 71%/64%/80%)"; nothing for a single round."""
    if len(pairs) < 2:
        return ""
    return f" (median of {len(pairs)}: " + "/".join(f"{on / off:.0%}" for off, on in pairs) + ")"


def _fleet_rows(results: Results, rows: list[Row]) -> None:
    """Issue 20's rows (bench/fleet.py): a run over three hosts on one Redis."""
    results.numbers["fleet"] = found = fleet.measure(results.smoke)
    for name, value in fleet.describe(found):
        merged = name.startswith("3 x ")
        rows.append(Row(name, value, fleet.MERGED_TARGET if merged else "",
                        results.judge(fleet.every_byte(found)) if merged else ""))
    if found["problems"]:
        results.notes.append(f"gunicorn (fleet hosts) logged errors: {found['problems'][:3]}")


def redis_rows(results: Results, rows: list[Row], sizes: Sizes) -> None:
    """The Redis store's rows, against the memory rows of the same run (issue 16)."""
    numbers = results.numbers
    with RedisProcess() as redis_proc:
        store = {"SSECMD_STORE_URL": redis_proc.url}
        with Server(2, "redis-2w", store) as server:
            clients.short_jobs(server.host, server.port, 20, 4)
            many = spawn(server, sizes.spawn_parallel, sizes.spawn_clients)
            _check_log(results, server)
        numbers["redis_spawn_parallel_2w"] = many
        memory = numbers.get("spawn_parallel_2w", {}).get("jobs_s")
        share = many["jobs_s"] / memory if memory else 0.0
        rows.append(Row(f"short jobs, {sizes.spawn_clients} parallel clients, 2 workers ({many['jobs']} jobs)",
                        f"{many['jobs_s']:.0f} jobs/s ({share:.0%} of memory's), lost output {many['lost_output']}",
                        ">= 70% of memory's, 0 lost",
                        results.judge(share >= 0.7 and many["lost_output"] == 0)))

        with Server(4, "redis-4w", store) as server:
            cpu, rss = redis_proc.cpu(), redis_proc.rss()
            found = fanout(server, sizes.fanout_multi, sizes.messages)
            cpu, rss = redis_proc.cpu() - cpu, redis_proc.rss() - rss
            _check_log(results, server)
        numbers["redis_fanout_4w"] = {**found, "redis_cpu_s": cpu, "redis_rss_bytes": rss}
        count = found["subscribers"]
        reach = found["reach_all_p50_ns"]
        rows.append(Row(f"{count} subscribers over 4 workers (per worker: "
                        f"{'/'.join(map(str, found['subscribers_per_worker']))}): fraction delivered",
                        f"{found['delivered_fraction']:.1%}", "100%",
                        results.judge(found["delivered_fraction"] == 1.0)))
        rows.append(Row(f"{count}: one message to every subscriber, p50",
                        f"{reach / 1e6:.1f} ms" if reach is not None else "never all", "<= 40 ms",
                        results.judge(reach is not None and reach <= 40e6)))
        rows.append(Row(f"{count}: worker RSS per subscriber", f"{found['rss_per_subscriber'] / 1024:.1f} KiB"))
        rows.append(Row("Redis per 1,000 subscribers (connect, then the messages)",
                        f"CPU {cpu * 1000 / count:.2f} s, RSS {rss * 1000 / count / 1024:.0f} KiB"))
        _redis_many_rows(results, rows, sizes, store)

        size = sizes.throughput_bytes
        with (Server(1, "redis-a", {**store, "SSECMD_HOST_NAME": "bench-a"}) as owner,
              Server(1, "redis-b", {**store, "SSECMD_HOST_NAME": "bench-b"}) as viewer):
            throughput_server(owner, 1_000_000, "events", viewer)  # warm-up
            cpu, rss = redis_proc.cpu(), redis_proc.rss()
            found = throughput_server(owner, size, "events", viewer)
            cpu, rss = redis_proc.cpu() - cpu, redis_proc.rss() - rss
        numbers["redis_throughput_other_worker"] = {**found, "redis_cpu_s": cpu, "redis_rss_bytes": rss}
        memory = numbers.get("throughput_events", {}).get("mb_s")
        share = found["mb_s"] / memory if memory else 0.0
        missed = f", {found['missed_bytes']} bytes missed (gap)" if found["missed_bytes"] else ", every byte"
        rows.append(Row(f"one {size / MB:.0f} MB job viewed from another host's worker (GET /jobs/<id>/events)",
                        f"{found['mb_s']:.0f} MB/s ({share:.0%} of memory's /jobs/<id>/events){missed}",
                        ">= 35% of memory's, every byte",
                        results.judge(share >= 0.35 and not found["missed_bytes"])))
        per_mb = size / MB
        rows.append(Row("Redis per MB of output (the stream trimmed at job_buffer_bytes)",
                        f"CPU {cpu / per_mb * 1000:.1f} ms, RSS growth {rss / per_mb / 1024:.0f} KiB"))


def redis_many(store: dict[str, str], count: int, messages: int, processes: int) -> dict:
    """``count`` subscribers over 4 workers on Redis, held by ``processes`` client processes (each from its own
    127.0.0.N: one process's open-files limit and one address's ports are each below ``count``)."""
    with Server(4, "redis-4w-many", store) as server:
        found = fanout(server, count, messages, processes=processes)
        found["problems"] = server.problems()
    return found


def _redis_many_rows(results: Results, rows: list[Row], sizes: Sizes, store: dict[str, str]) -> None:
    count = sizes.redis_many
    found = results.numbers["redis_fanout_many"] = redis_many(store, count, sizes.messages, sizes.redis_many_clients)
    if found["problems"]:
        results.notes.append(f"gunicorn (4 workers, {count} subscribers) logged errors: {found['problems'][:3]}")
    held = found["connected"] == count and found["closed_by_server"] == 0
    delivered = found["delivered_fraction"]
    reach = found["reach_all_p50_ns"]
    rows.append(Row(f"{count:,} subscribers over 4 workers from {sizes.redis_many_clients} client processes "
                    f"(per worker: {'/'.join(map(str, found['subscribers_per_worker']))}): held, delivered",
                    f"{found['connected']} in {found['connect_seconds']:.1f} s, {found['closed_by_server']} dropped, "
                    f"{delivered:.1%} of {sizes.messages} messages", "all held, 100% delivered",
                    results.judge(held and delivered == 1.0)))
    rows.append(Row(f"{count:,}: one message to every subscriber, p50; worker RSS per subscriber",
                    (f"{reach / 1e6:.0f} ms" if reach is not None else "never all")
                    + f"; {found['rss_per_subscriber'] / 1024:.1f} KiB"))
    if results.smoke and not (held and delivered == 1.0):
        raise BenchError(f"{count} subscribers over 4 workers on Redis: {found['connected']} held, "
                         f"{found['closed_by_server']} dropped, {delivered:.1%} delivered")


def _capacity_note(capacity: dict | None) -> str:
    """How the server was run: its capacity as shipped, and the per-user policy limits the bench lifts."""
    lifted = ", ".join(f"{name.removeprefix('SSECMD_').lower()}={value or '(none)'}"
                       for name, value in LIFTED_POLICY.items())
    shipped = "The server runs with its shipped capacity settings: no gunicorn flags of the bench's own"
    if capacity:
        shell_soft, shell_hard = capacity["shell_nofile"]
        shipped += (
            f"; started with the shell's open-files limit (soft {shell_soft}, hard {shell_hard}), its worker ran "
            f"with {capacity['nofile_soft']} (hard {capacity['nofile_hard']}), worker_connections "
            f"{capacity['worker_connections']}, max_streams {capacity['max_streams']}"
        )
        if capacity["warning"]:
            shipped += f" (it warned: {capacity['warning']})"
    return f"{shipped}. Lifted for measuring, per-user policy limits only: {lifted}."


def _fanout_rows(results: Results, rows: list[Row], found: dict, single: bool) -> None:
    count = found["subscribers"]
    per_sub = found["rss_per_subscriber"] / 1024
    where = "" if single else f" (per worker: {'/'.join(map(str, found['subscribers_per_worker']))})"
    held = found["connected"] == count and found["closed_by_server"] == 0
    rows.append(Row(f"{count} subscribers: connected, kept{where}",
                    f"{found['connected']} in {found['connect_seconds']:.1f} s, {found['closed_by_server']} dropped",
                    "10,000 held" if single and count >= 10_000 else "",
                    results.judge(held) if single and count >= 10_000 else ""))
    rows.append(Row(f"{count}: RSS per subscriber", f"{per_sub:.1f} KiB",
                    "<= 16 KiB" if single else "", results.judge(per_sub <= 16) if single else ""))
    reach = found["reach_all_p50_ns"]
    if single:
        target = "<= 40 ms" if count == 2000 else ""
        rows.append(Row(f"{count}: one message to every subscriber, p50",
                        f"{reach / 1e6:.1f} ms" if reach is not None else "never all",
                        target, results.judge(reach is not None and reach <= 40e6) if target else ""))
    else:
        reached = found["reach_reached_p50_ns"]
        rows.append(Row(f"{count}: one message to the subscribers it reached, p50",
                        f"{reached / 1e6:.1f} ms" if reached is not None else "none"))
    p50, p99 = found["delivery_p50_ns"], found["delivery_p99_ns"]
    rows.append(Row(f"{count}: delivery latency per subscriber p50 / p99",
                    f"{p50 / 1e6:.1f} / {p99 / 1e6:.1f} ms" if p99 is not None else "-"))
    rows.append(Row(f"{count}: fraction delivered", f"{found['delivered_fraction']:.1%}"
                    + ("" if single else " (channels are per worker)")))


def _check_log(results: Results, server: Server) -> None:
    problems = server.problems()
    if problems:
        results.notes.append(f"gunicorn ({server.workers} worker(s)) logged errors: {problems[:3]}")


def profiling_available() -> bool:
    """Whether py-spy is installed."""
    return py_spy() is not None
