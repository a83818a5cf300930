"""Fleets (issue 20): a run over three hosts on this machine, one redis-server, followed on GET /runs/<id>/events.

Three gunicorn masters, each the bench's ``Server`` (one worker, as shipped, the per-user policy limits lifted)
with its own ``host_name``, ``host_tags``, ``run_dir`` and history directory, all with the same ``store_url``:
one ``RedisProcess`` of their own. No nginx: each run is posted to one host and followed on that same host (the
one coordinating it), taking the three hosts in turn.

- **First output**: ``POST /runs`` of ``echo hi`` on every host, then ``GET /runs/<id>/events`` from Python
  (http.client, chunked read as it arrives): from just before the POST to the arrival of each host's first
  ``stdout`` event; the run's figure is its slowest host. p50/p90/max over the runs.
- **Merged throughput**: ``POST /runs`` of ``writer 50 MB`` on every host; the C ``sink`` reads the run's stream;
  MB/s is the three outputs' bytes over the time from just before the POST to the end of the response. The file
  is then parsed and every host's stdout checked byte for byte at the offsets its job's event ids give (gaps
  announced by ``gap`` events are counted, not hidden); the run must end ``succeeded``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .clients import get_request, sink
from .redis_server import RedisProcess
from .server import Server
from .sse import Delivery, Event, parse_events, stamped_events
from .tools import SCRATCH, BenchError, busy_fraction, cpu_seconds, expected_output, helper, percentile

MB = 1e6
TITLE = "Fleet (3 hosts on this machine, one Redis; 1 worker each, no nginx)"
TAG = "bench"
HOSTS = {"fleet-web-1": "bench,web", "fleet-web-2": "bench,web", "fleet-db-1": "bench,db"}


@dataclass(frozen=True)
class FleetSizes:
    """How big the fleet rows are."""

    first_output_runs: int
    merged_bytes: int  # per host
    merged_repeats: int


FULL = FleetSizes(20, 50_000_000, 3)
SMOKE = FleetSizes(3, 1_000_000, 1)


class Fleet:
    """redis-server and the three hosts on it; ready once GET /hosts lists all three ``up``."""

    def __init__(self) -> None:
        self.redis = RedisProcess("redis-fleet")
        self.hosts: dict[str, Server] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Fleet:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.redis)
            for name, tags in HOSTS.items():
                env = {"SSECMD_STORE_URL": self.redis.url, "SSECMD_HOST_NAME": name, "SSECMD_HOST_TAGS": tags}
                self.hosts[name] = Server(1, name, env)
                stack.callback(self.hosts[name].stop)  # nothing to do for one that did not start
            with ThreadPoolExecutor(len(HOSTS)) as pool:  # the three start at once: seconds off the smoke run
                for started in [pool.submit(server.start) for server in self.hosts.values()]:
                    started.result()
            deadline = time.monotonic() + 20
            while True:
                _, body = next(iter(self.hosts.values())).request("GET", "/hosts", timeout=5)
                up = {h["name"] for h in body.get("hosts", []) if h.get("state") == "up"} if isinstance(
                    body, dict) else set()
                if set(HOSTS) <= up:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"GET /hosts: only {sorted(up)} up after 20 s")
                time.sleep(0.1)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def entry(self, index: int) -> Server:
        """The host that takes the ``index``-th run (in turn)."""
        return list(self.hosts.values())[index % len(self.hosts)]

    def start(self, entry: Server, argv: list[str]) -> dict:
        """POST /runs on every host (by the bench tag); the 201 body."""
        status, created = entry.request("POST", "/runs", {"argv": argv, "tags": [TAG]})
        if status != 201:
            raise BenchError(f"POST /runs: {status} {created}")
        if sorted(created["hosts"]) != sorted(HOSTS):
            raise BenchError(f"POST /runs: hosts {created['hosts']}")
        return created

    def problems(self) -> list[str]:
        """What the hosts' gunicorns logged as errors."""
        return [f"{name}: {line}" for name, server in self.hosts.items() for line in server.problems()]


def arrivals(entry: Server, path: str, clock: Callable[[], float]) -> Iterator[tuple[Event, float]]:
    """The events of ``entry``'s SSE response at ``path`` as they arrive, each with ``clock()`` when its last
    bytes came; the connection closes when the caller stops."""
    conn = http.client.HTTPConnection(entry.host, entry.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Accept": "text/event-stream"})
        response = conn.getresponse()
        if response.status != 200:
            raise BenchError(f"GET {path}: {response.status}")
        pending = b""
        while data := response.read1(65536):
            arrived = clock()
            pending += data
            cut = pending.rfind(b"\n\n")
            if cut < 0:
                continue
            events, pending = parse_events(pending[: cut + 2]), pending[cut + 2 :]
            for event in events:
                yield event, arrived
    finally:
        conn.close()


def first_output(fleet: Fleet, index: int) -> dict:
    """One run of ``echo hi`` on every host, followed live: ms from just before the POST to each host's first
    stdout event, to the POST's answer and to run_exit."""
    entry = fleet.entry(index)
    started = time.perf_counter_ns()
    created = fleet.start(entry, ["echo", "hi"])
    answered = time.perf_counter_ns()
    first: dict[str, int] = {}
    out: dict[str, str] = {}
    ended = None
    for event, arrived in arrivals(entry, created["events"], time.perf_counter_ns):
        payload = json.loads(event.data)
        if event.kind == "stdout":
            first.setdefault(payload["host"], arrived)
            out[payload["host"]] = out.get(payload["host"], "") + payload["data"]["out"]
        elif event.kind == "run_exit":
            ended = (arrived, payload)
            break
    if ended is None:
        raise BenchError(f"run {created['id']}: the stream ended without run_exit")
    if ended[1]["state"] != "succeeded" or out != dict.fromkeys(HOSTS, "hi\n"):
        raise BenchError(f"run {created['id']}: {ended[1]['state']}, output {out}")
    ms = {host: (at - started) / 1e6 for host, at in first.items()}
    return {"entry": entry.env["SSECMD_HOST_NAME"], "posted_ms": (answered - started) / 1e6, "first_ms": ms,
            "every_host_ms": max(ms.values()), "first_host_ms": min(ms.values()),
            "run_exit_ms": (ended[0] - started) / 1e6}


def check_run_stream(events: list[Event], size: int) -> tuple[dict[str, Delivery], dict, int, int]:
    """Every host's stdout on a run's stream against ``writer size``'s bytes: per host delivery, the run_exit
    body, how many stdout events, and how often consecutive stdout events changed host (the merge)."""
    expected = expected_output(size)
    found = {name: Delivery() for name in HOSTS}
    position = dict.fromkeys(HOSTS, 0)  # each host's output bytes accounted for so far
    others = dict.fromkeys(HOSTS, 0)  # each host's job events other than output
    run_exit: dict = {}
    switches = stdout_events = 0
    last_host = None
    for event in events:
        payload = json.loads(event.data)
        if event.kind == "run_exit":
            run_exit = payload
            continue
        if event.kind == "host_state":
            continue
        host = payload.get("host")
        delivery = found.get(host)
        if delivery is None:
            raise BenchError(f"{event.kind} event of an unknown host: {event.data[:200]}")
        if event.kind == "stdout":
            chunk = payload["data"]["out"].encode("utf-8")
            end = int(payload["id"]) - others[host]
            start = end - len(chunk)
            if start != position[host]:
                delivery.problems.append(f"stdout event {payload['id']} starts at byte {start}, expected "
                                         f"{position[host]}")
            if expected[start:end] != chunk:
                delivery.problems.append(f"stdout event {payload['id']}: bytes {start}..{end} differ")
            delivery.received_bytes += len(chunk)
            delivery.stdout_events += 1
            position[host] = end
            stdout_events += 1
            switches += last_host is not None and host != last_host
            last_host = host
        elif event.kind == "gap":
            delivery.missed_bytes += payload["missed_bytes"]
            position[host] += payload["missed_bytes"]
        elif event.kind in ("start", "exit", "err", "stderr"):
            if event.kind != "stderr":
                others[host] += 1
            if event.kind == "exit":
                delivery.exit = payload["data"]
            elif event.kind != "start":
                delivery.problems.append(f"{event.kind}: {event.data[:200]}")
    for host, delivery in found.items():
        if position[host] != size:
            delivery.problems.append(f"output ends at byte {position[host]}, the command wrote {size}")
        if delivery.exit is None or delivery.exit.get("code") != 0:
            delivery.problems.append(f"exit: {delivery.exit}")
        del delivery.problems[5:]
    return found, run_exit, stdout_events, switches


def merged_throughput(fleet: Fleet, index: int, size: int) -> dict:
    """One run of ``writer size`` on every host, the C sink reading GET /runs/<id>/events; checked afterwards."""
    entry = fleet.entry(index)
    outfile = SCRATCH / f"ssecmd-bench-fleet-{entry.port}.out"
    workers = {name: server.worker_pid() for name, server in fleet.hosts.items()}
    cpu = {name: cpu_seconds(pid) for name, pid in workers.items()}
    redis_cpu = fleet.redis.cpu()
    viewer_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    posted = time.time_ns()
    created = fleet.start(entry, [helper("writer"), str(size)])
    result = sink(entry.port, outfile, get_request(entry.host, entry.port, created["events"]), stamped=True)
    seconds = (result.end_ns - posted) / 1e9
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    viewer = (after.ru_utime + after.ru_stime - viewer_cpu.ru_utime - viewer_cpu.ru_stime) / seconds
    cpu = {name: (cpu_seconds(pid) - cpu[name]) / seconds for name, pid in workers.items()}
    redis_cpu = (fleet.redis.cpu() - redis_cpu) / seconds
    try:
        events, arrivals = stamped_events(str(outfile))  # checks the status is 200
    finally:
        outfile.unlink()
    first_stdout = next(at for event, at in zip(events, arrivals, strict=True) if event.kind == "stdout")
    last_stdout = max(at for event, at in zip(events, arrivals, strict=True) if event.kind == "stdout")
    found, run_exit, stdout_events, switches = check_run_stream(events, size)
    problems = [f"{host}: {'; '.join(d.problems)}" for host, d in found.items() if d.problems]
    if run_exit.get("state") != "succeeded":
        problems.append(f"run_exit: {run_exit.get('state')} {run_exit.get('failed_hosts')}")
    if problems:
        raise BenchError(f"run {created['id']}: " + " | ".join(problems))
    delivered = sum(d.received_bytes for d in found.values())
    ended = [h["ended_at"] for h in run_exit["hosts"] if h.get("ended_at")]
    return {"entry": entry.env["SSECMD_HOST_NAME"], "mb_s": delivered / seconds / MB, "seconds": seconds,
            "written_mb_s": len(HOSTS) * size / seconds / MB, "delivered_bytes": delivered,
            "jobs_ended_s": max(ended) - run_exit["created_at"] if ended else None,
            "first_output_s": (first_stdout - posted) / 1e9,
            "streaming_mb_s": delivered / max(last_stdout - first_stdout, 1) * 1e3,
            "wire_bytes": result.bytes, "stdout_events": stdout_events, "host_switches": switches,
            "missed_bytes": {host: d.missed_bytes for host, d in found.items()},
            "worker_cpu": cpu, "redis_cpu": redis_cpu, "viewer_cpu": viewer}


def measure(smoke: bool) -> dict:
    """Start the fleet, run both benchmarks, stop it; the numbers (``describe`` turns them into rows)."""
    sizes = SMOKE if smoke else FULL
    with Fleet() as fleet:
        if not smoke:  # warm-up: the first requests import and allocate lazily
            first_output(fleet, 0)
            merged_throughput(fleet, 0, 1_000_000)
        runs = [first_output(fleet, i) for i in range(sizes.first_output_runs)]
        merged = [merged_throughput(fleet, i, sizes.merged_bytes) for i in range(sizes.merged_repeats)]
        problems = fleet.problems()
    every = [r["every_host_ms"] for r in runs]
    return {
        "runs": runs, "merged": merged, "merged_bytes": sizes.merged_bytes, "problems": problems,
        "every_host_p50_ms": percentile(every, 0.5), "every_host_p90_ms": percentile(every, 0.9),
        "every_host_max_ms": max(every),
        "first_host_p50_ms": percentile([r["first_host_ms"] for r in runs], 0.5),
        "posted_p50_ms": percentile([r["posted_ms"] for r in runs], 0.5),
        "run_exit_p50_ms": percentile([r["run_exit_ms"] for r in runs], 0.5),
    }


MERGED_TARGET = "every byte, every run"


def every_byte(found: dict) -> bool:
    """Whether every merged run delivered every host's output whole (no gap)."""
    return not any(sum(r["missed_bytes"].values()) for r in found["merged"])


def describe(found: dict) -> list[tuple[str, str]]:
    """The section's rows: (name, value); the merged row's target is MERGED_TARGET (``every_byte``)."""
    runs, merged = found["runs"], found["merged"]
    median = sorted(merged, key=lambda r: r["mb_s"])[len(merged) // 2]
    spread = "/".join(f"{r['mb_s']:.0f}" for r in merged)
    size = found["merged_bytes"] / MB
    missed = sum(sum(r["missed_bytes"].values()) for r in merged)
    delivered = (f"{median['delivered_bytes'] / MB:.0f} of {3 * size:g} MB, the rest skipped (gap; "
                 f"{missed / MB:.0f} MB over the {len(merged)} runs)" if missed else "every byte")
    ended = f"{median['jobs_ended_s']:.2f}" if median["jobs_ended_s"] is not None else "?"
    workers = ", ".join(f"{name.removeprefix('fleet-')}{'*' if name == median['entry'] else ''} {share:.0%}"
                        for name, share in median["worker_cpu"].items())
    return [
        (f"POST /runs -> every host's first output, {len(runs)} x `echo hi`: p50 / p90 / max",
         f"{found['every_host_p50_ms']:.1f} / {found['every_host_p90_ms']:.1f} / {found['every_host_max_ms']:.1f} ms"),
        ("  ... p50: POST answered / first host's first output / run_exit",
         f"{found['posted_p50_ms']:.1f} / {found['first_host_p50_ms']:.1f} / {found['run_exit_p50_ms']:.1f} ms"),
        (f"3 x {size:g} MB merged into one viewer, every byte checked (median of {len(merged)}: {spread})",
         f"{median['mb_s']:.0f} MB/s delivered, {delivered}"),
        ("  ... from the POST: first stdout / the jobs ended / last byte",
         f"{median['first_output_s']:.2f} / {ended} / {median['seconds']:.2f} s"),
        ("  ... rate from the first stdout event to the last; the merge",
         f"{median['streaming_mb_s']:.0f} MB/s; {median['host_switches']} host switches in "
         f"{median['stdout_events']} stdout events"),
        ("  ... CPU (of one core): host workers (* served the viewer)",
         f"{workers}; redis {median['redis_cpu']:.0%}, viewer (C sink) {median['viewer_cpu']:.0%}"),
    ]


def main() -> int:
    """``python -m bench.fleet [--smoke]``: these rows alone, printed (the full run has them too)."""
    import argparse
    import os

    from .tools import OUT, build_helpers, raise_nofile

    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=main.__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    build_helpers()
    busy, load = busy_fraction(1.0), os.getloadavg()
    found = measure(args.smoke)
    found["machine_before"] = {"busy": busy, "loadavg": load, "after": os.getloadavg()}
    print(f"before: CPUs {busy:.0%} busy with other work, load {load[0]:.1f}; after: load {os.getloadavg()[0]:.1f}")
    (OUT / "fleet.json").write_text(json.dumps(found, indent=1))
    for name, value in describe(found):
        print(f"{name}\n    {value}")
    for problem in found["problems"]:
        print("gunicorn logged:", problem)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
