"""How long a run takes to notice its jobs' ends (issue 20): the fleet of bench/fleet.py (three hosts, one Redis),
not part of ``make bench``.

- **run_exit after the last exit**: ``echo hi`` on every host, followed on the host that coordinates it; ms from
  the arrival of the last host's ``exit`` event to the arrival of ``run_exit`` (client side), and from the
  record: the run's ``ended_at`` minus its last host's ``ended_at`` (server side).
- **parallel: 1 hand-over**: ``echo hi`` on every host one at a time; ms from one host's job's ``ended_at`` to the
  next one's ``started_at``, from the run's record.

    .venv/bin/python -m bench.run_exit_delay [--runs 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

from .fleet import TAG, Fleet, arrivals
from .tools import BenchError


def follow(fleet: Fleet, index: int, body: dict) -> tuple[dict, float | None, float]:
    """POST /runs on the index-th host, follow its events there: (the final record, arrival of the last ``exit``
    event, arrival of ``run_exit``), times from time.monotonic()."""
    entry = fleet.entry(index)
    status, created = entry.request("POST", "/runs", body)
    if status != 201:
        raise BenchError(f"POST /runs: {status} {created}")
    last_exit, ended = None, None
    for event, arrived in arrivals(entry, created["events"], time.monotonic):
        if event.kind == "exit":
            last_exit = arrived
        elif event.kind == "run_exit":
            ended = arrived
            break
    if ended is None:
        raise BenchError(f"run {created['id']}: no run_exit")
    _, record = entry.request("GET", created["url"])
    if record["state"] != "succeeded":
        raise BenchError(f"run {created['id']}: {record['state']}")
    if record["ended_at"] is None:
        raise BenchError(f"run {created['id']}: run_exit came, but the record has no ended_at")
    return record, last_exit, ended


def main() -> int:
    """Print the medians (and spreads) of both delays."""
    parser = argparse.ArgumentParser(prog="python -m bench.run_exit_delay", description=main.__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    client_ms, record_ms, handover_ms = [], [], []
    with Fleet() as fleet:
        follow(fleet, 0, {"argv": ["echo", "hi"], "tags": [TAG]})  # warm-up
        for index in range(args.runs):
            record, last_exit, ended = follow(fleet, index, {"argv": ["echo", "hi"], "tags": [TAG]})
            if last_exit is not None:
                client_ms.append((ended - last_exit) * 1000)
            record_ms.append((record["ended_at"] - max(h["ended_at"] for h in record["hosts"])) * 1000)
            record, _, _ = follow(fleet, index, {"argv": ["echo", "hi"], "tags": [TAG], "parallel": 1})
            hosts = sorted(record["hosts"], key=lambda h: h["started_at"])
            handover_ms += [(b["started_at"] - a["ended_at"]) * 1000 for a, b in itertools.pairwise(hosts)]

    def line(name: str, values: list[float]) -> str:
        ordered = sorted(values)
        return (f"{name}: median {statistics.median(ordered):.1f} ms, min {ordered[0]:.1f}, "
                f"max {ordered[-1]:.1f} (n={len(ordered)})")

    print(line("run_exit after the last host's exit event (client)", client_ms))
    print(line("run ended_at - last host's ended_at (record)", record_ms))
    print(line("parallel 1: next host's started_at - previous host's ended_at", handover_ms))
    print(json.dumps({"client_ms": client_ms, "record_ms": record_ms, "handover_ms": handover_ms}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
