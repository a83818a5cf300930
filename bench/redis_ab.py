"""``python -m bench.redis_ab OTHER_CHECKOUT``: the Redis store's ratio rows of this checkout against another's.

Each round, for each checkout (this one, then the other; the other way round in
the next round), measures what ``make bench`` compares, in the same minute:

- ``events``: one job's output (``--bytes``) over GET /jobs/<id>/events, memory
  store (1 worker), against the same job viewed from a second host's worker on
  Redis (``throughput_server`` with a viewer);
- ``short``: short jobs from 20 clients on 2 workers, memory store against Redis.

It prints each run, each side's ratio per round, and the medians. ``--profile``
samples the Redis viewer's worker (py-spy) into bench/out/profile/redis-*.txt
and prints its hot spots.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from .profiler import Profile, hot_spots
from .redis_server import RedisProcess
from .server import Server
from .suite import spawn, throughput_server
from .tools import OUT, REPO, build_helpers, cpu_seconds, expected_output, raise_nofile


def events_pair(repo: Path, venv_bin: Path | None, size: int, profile: Path | None) -> tuple[float, float]:
    """(memory MB/s, Redis other-host MB/s) for one checkout."""
    with Server(1, "ab-mem", repo=repo, venv_bin=venv_bin) as server:
        throughput_server(server, 1_000_000, "events")
        memory = throughput_server(server, size, "events")["mb_s"]
    with RedisProcess("redis-ab") as redis_proc:
        store = {"SSECMD_STORE_URL": redis_proc.url}
        with (Server(1, "ab-redis-a", {**store, "SSECMD_HOST_NAME": "bench-a"}, repo=repo, venv_bin=venv_bin) as a,
              Server(1, "ab-redis-b", {**store, "SSECMD_HOST_NAME": "bench-b"}, repo=repo, venv_bin=venv_bin) as b):
            throughput_server(a, 1_000_000, "events", b)
            pids = {"owner": a.worker_pid(), "viewer": b.worker_pid(), "redis": redis_proc.proc.pid}
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            if profile is not None:
                owner = profile.with_name(profile.stem + "-owner.txt")
                with Profile(b.worker_pid(), profile), Profile(a.worker_pid(), owner):
                    found = throughput_server(a, size, "events", b)
            else:
                found = throughput_server(a, size, "events", b)
            cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
    spent = ", ".join(f"{name} {value:.2f}" for name, value in cpu.items())
    print(f"  redis {found['seconds']:.2f} s; CPU s: {spent}")
    if found["missed_bytes"]:
        print(f"  (the Redis viewer missed {found['missed_bytes']} bytes)")
    return memory, found["mb_s"]


def short_pair(repo: Path, venv_bin: Path | None, jobs: int) -> tuple[float, float]:
    """(memory jobs/s, Redis jobs/s), 20 clients on 2 workers, for one checkout."""
    rates = []
    for store in (None, "redis"):
        with RedisProcess("redis-ab") as redis_proc:
            extra = {"SSECMD_STORE_URL": redis_proc.url} if store else {}
            with Server(2, f"ab-short-{store or 'memory'}", extra, repo=repo, venv_bin=venv_bin) as server:
                spawn(server, 20, 4)
                redis_cpu = cpu_seconds(redis_proc.proc.pid)
                found = spawn(server, jobs, 20)
                redis_cpu = cpu_seconds(redis_proc.proc.pid) - redis_cpu
        print(f"  {store or 'memory'}: worker CPU {found['worker_cpu'] / found['jobs_s'] * 1000:.2f} ms a job"
              + (f", Redis CPU {redis_cpu / found['jobs'] * 1000:.2f} ms a job" if store else ""))
        if found["lost_output"]:
            print(f"  ({store or 'memory'}: {found['lost_output']} jobs lost output)")
        rates.append(found["jobs_s"])
    return rates[0], rates[1]


def main() -> int:
    """Run the rounds, print each run and the medians."""
    parser = argparse.ArgumentParser(prog="python -m bench.redis_ab", description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, nargs="?", help="the other checkout (with its own .venv)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", default="events,short")
    parser.add_argument("--bytes", type=int, default=200_000_000)
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    build_helpers()
    expected_output(args.bytes)
    sides = {"this": (REPO, None)}
    if args.other is not None:
        other = args.other.resolve()
        sides["other"] = (other, other / ".venv" / "bin")
    rows = args.rows.split(",")
    ratios: dict[tuple[str, str], list[float]] = {}
    for round_number in range(args.rounds):
        order = list(sides) if round_number % 2 == 0 else list(reversed(sides))
        for side in order:
            repo, bin_dir = sides[side]
            for row in rows:
                if row == "events":
                    profile = OUT / "profile" / f"redis-{side}-{round_number}.txt" if args.profile else None
                    memory, redis_rate = events_pair(repo, bin_dir, args.bytes, profile)
                    unit = "MB/s"
                else:
                    memory, redis_rate = short_pair(repo, bin_dir, args.jobs)
                    unit = "jobs/s"
                ratio = redis_rate / memory
                ratios.setdefault((row, side), []).append(ratio)
                print(f"round {round_number + 1} {side:5} {row:6} memory {memory:6.0f} redis {redis_rate:6.0f} "
                      f"{unit}: {ratio:.0%}", flush=True)
                if row == "events" and profile is not None:
                    for path in (profile, profile.with_name(profile.stem + "-owner.txt")):
                        spots = hot_spots(path, 20)
                        print(f"  {path.name}: {spots['samples']} samples")
                        for name, share in spots["self"]:
                            print(f"    {share:5.1f}  {name}")
                        print("    inclusive:")
                        for name, share in spots["inclusive"]:
                            print(f"    {share:5.1f}  {name}")
    for (row, side), found in sorted(ratios.items()):
        print(f"median {row:6} {side:5} {statistics.median(found):.0%} (rounds: "
              f"{', '.join(f'{r:.0%}' for r in found)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
