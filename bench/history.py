"""History on disk (issue 17): what keeping every job on disk costs, and what reading it back costs.

Rows, in the same run as the memory-only ones: one large job's throughput and
short jobs/s with history on and off (on: every byte and job on disk, none
lost), a replay of a finished large job from disk (MB/s, the worker's peak
RSS while it streams), and the worker's RSS after many finished 1 MB jobs
(finished output leaves memory once on disk, so it must stay flat).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .clients import get_request, sink
from .server import Server
from .sse import check_job_stream, parse_events, split_response
from .tools import OUT, SCRATCH, BenchError, expected_output, helper, rss_bytes

MB = 1e6
HISTORY_OFF = {"SSECMD_HISTORY": "false"}


@dataclass(frozen=True)
class HistorySizes:
    """How big the history benchmarks are."""

    job_bytes: int
    short_jobs: int
    finished_jobs: int
    rounds: int  # off and on, side by side: the rows are the medians (one round's ratio swings by half)
    finished_job_bytes: int = 1_000_000


FULL = HistorySizes(200_000_000, 2000, 1000, 3)
SMOKE = HistorySizes(5_000_000, 50, 20, 1)


def history_server(name: str, on: bool) -> Server:
    """A server as shipped (history on, its own data_dir) or with ``history = false``."""
    # On a disk (bench/out), as deployed (/var/lib), not on the tmpfs the bench's bulk files may use.
    extra = {"SSECMD_DATA_DIR": str(OUT / "history" / f"{name}-{time.time_ns()}")} if on else dict(HISTORY_OFF)
    # Retention must not forget what the rows check is on disk.
    extra["SSECMD_MAX_FINISHED_JOBS"] = "100000"
    return Server(1, name, extra)


def _wait_finished(server: Server, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = server.request("GET", f"/jobs/{job_id}")
        if status == 200 and job["state"] not in ("running", "stopping"):
            return job
        time.sleep(0.05)
    raise BenchError(f"job {job_id} did not finish")


def _detached(server: Server, size: int) -> dict:
    status, job = server.request("POST", "/jobs", {"argv": [helper("writer"), str(size)]})
    if status != 201:
        raise BenchError(f"POST /jobs: {status} {job}")
    return job


def large_job(server: Server, size: int, throughput_server: Callable[..., dict]) -> dict:
    """One detached job writing ``size`` bytes, followed over /jobs/<id>/events to its end (every byte checked,
    as the throughput rows do: /output aborts a reader that falls behind the memory buffer): MB/s."""
    found = throughput_server(server, size, "events")
    if found["missed_bytes"]:
        raise BenchError(f"the stream missed {found['missed_bytes']} of {size} bytes")
    final = _wait_finished(server, found["job_id"])
    return {"mb_s": found["mb_s"], "job": final, "health": server.request("GET", "/healthz")[1]}


def replay(server: Server, job_id: str, size: int) -> dict:
    """A finished job's output read back (from disk, with history on): MB/s and the worker's peak RSS."""
    (worker,) = server.worker_pids()
    time.sleep(1.0)  # the finished job leaves memory once it is on disk
    base = rss_bytes(worker)
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes(worker))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    outfile = SCRATCH / f"ssecmd-bench-replay-{server.port}.out"
    try:
        # Over /events, which says `gap` where the history has a hole (history that fell behind a flood);
        # /output would abort the download there.
        result = sink(server.port, outfile, get_request(server.host, server.port, f"/jobs/{job_id}/events"))
        status, _, body = split_response(outfile.read_bytes())
    finally:
        done.set()
        sampler.join()
        outfile.unlink(missing_ok=True)
    if status != 200:
        raise BenchError(f"GET /jobs/{job_id}/events: {status}")
    delivery = check_job_stream(parse_events(body), expected_output(size))
    if delivery.problems:
        raise BenchError("replay: " + "; ".join(delivery.problems))
    return {"mb_s": size / result.seconds / MB, "peak_rss": peak[0], "base_rss": base,
            "missed_bytes": delivery.missed_bytes}


def rss_after_finished_jobs(server: Server, count: int, size: int) -> dict:
    """The worker's RSS after ``count / 10`` and after ``count`` finished jobs of ``size`` bytes each."""
    (worker,) = server.worker_pids()
    marks = {}
    for n in range(1, count + 1):
        job = _detached(server, size)
        _wait_finished(server, job["id"])
        if n in (count // 10, count):
            time.sleep(1.0)
            marks[n] = rss_bytes(worker)
    return {"early": marks[count // 10], "late": marks[count]}


def jobs_on_disk(server: Server) -> int:
    """How many jobs GET /jobs lists (with history on: what the disk holds)."""
    status, body = server.request("GET", "/jobs?limit=1")
    if status != 200:
        raise BenchError(f"GET /jobs: {status}")
    return sum(body["counts"].values())
