"""``python -m bench.history_ab OTHER_CHECKOUT``: make bench's history rows, this checkout against another's.

Each round runs, for each checkout (its own ``.venv``, ``make install`` there), the
rows of ``_history_rows`` in ``bench/suite.py``: one 200 MB job over
/jobs/<id>/events and short jobs from 20 clients, with history off and then on
(a new server each, as shipped), the replay of the large job from disk; the order
of the checkouts alternates by round. The targets are same-run ratios (history
on / off), so it prints each run's ratios, the medians, and this checkout's
ratios paired against the other's by round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from . import history
from .server import Server
from .suite import spawn, throughput_server
from .tools import OUT, REPO, BenchError, build_helpers, raise_nofile

MB = 1e6


def _large(server: Server, job_bytes: int) -> dict:
    """history.large_job, except that a viewer that fell behind the memory buffer (on a busy machine) is counted,
    not fatal: its MB/s still compares."""
    found = throughput_server(server, job_bytes, "events")
    job = history._wait_finished(server, found["job_id"])
    return {"mb_s": found["mb_s"], "missed": found["missed_bytes"], "job": job}


def one_side(repo: Path, bin_dir: Path | None, env: dict[str, str], job_bytes: int, short_jobs: int, clients: int
             ) -> dict:
    """The history rows against one checkout's server."""
    found: dict = {}
    with Server(1, "hab-off", {**env, **history.HISTORY_OFF}, repo=repo, venv_bin=bin_dir) as off:
        large = _large(off, job_bytes)
        found["large_off"], found["missed_off"] = large["mb_s"], large["missed"]
        found["short_off"] = spawn(off, short_jobs, clients)["jobs_s"]
    on_dir = {**env, "SSECMD_DATA_DIR": str(OUT / "history" / f"hab-{repo.name}-{time.time_ns()}"),
              "SSECMD_MAX_FINISHED_JOBS": "100000"}
    with Server(1, "hab-on", on_dir, repo=repo, venv_bin=bin_dir) as on:
        large = _large(on, job_bytes)
        found["large_on"], found["missed_on"] = large["mb_s"], large["missed"]
        short = spawn(on, short_jobs, clients)
        found["short_on"] = short["jobs_s"]
        found["short_done"] = short["jobs"]
        found["listed"] = history.jobs_on_disk(on)
        replayed = history.replay(on, large["job"]["id"], job_bytes)
        # MB/s of what was on disk to read (history.replay divides the job's size: a replay that skips
        # a gap would look faster by what is missing).
        found["replay"] = replayed["mb_s"] * (job_bytes - replayed["missed_bytes"]) / job_bytes
        # What history lost: the gap a replay from disk reports, and the record on disk (once the job has left
        # memory; the record in memory counts what the memory buffer dropped instead).
        found["lost"] = replayed["missed_bytes"]
        found["lost_record"] = on.request("GET", f"/jobs/{large['job']['id']}")[1]["dropped_bytes"]
    found["large_share"] = found["large_on"] / found["large_off"]
    found["short_share"] = found["short_on"] / found["short_off"]
    return found


def main() -> int:
    """Run the rounds, print each run, the medians and the paired ratios."""
    parser = argparse.ArgumentParser(prog="python -m bench.history_ab", description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (with its own .venv)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--job-bytes", type=int, default=200_000_000)
    parser.add_argument("--short-jobs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for this checkout's servers only (repeatable)")
    parser.add_argument("--other-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the other checkout's servers only (repeatable)")
    args = parser.parse_args()
    other = args.other.resolve()
    OUT.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    build_helpers()
    sides = {"this": (REPO, None, dict(item.split("=", 1) for item in args.env)),
             "other": (other, other / ".venv" / "bin", dict(item.split("=", 1) for item in args.other_env))}
    results: dict[str, list[dict]] = {"this": [], "other": []}
    failed: list[int] = []
    for round_number in range(args.rounds):
        order = ["this", "other"] if round_number % 2 == 0 else ["other", "this"]
        for side in order:
            try:
                found = one_side(*sides[side], args.job_bytes, args.short_jobs, args.clients)
            except BenchError as exc:  # e.g. a viewer that fell behind the memory buffer on a busy machine
                print(f"round {round_number + 1} {side:5} failed: {exc}", flush=True)
                failed.append(round_number)
                continue
            found["round"] = round_number
            results[side].append(found)
            print(f"round {round_number + 1} {side:5} large off/on {found['large_off']:4.0f}/{found['large_on']:4.0f} "
                  f"MB/s = {found['large_share']:4.0%}, lost {found['lost']}/{found['lost_record']}; "
                  f"short off/on {found['short_off']:4.0f}/{found['short_on']:4.0f} jobs/s "
                  f"= {found['short_share']:4.0%}, "
                  f"{found['listed']} listed for {found['short_done']}; replay {found['replay']:4.0f} MB/s; "
                  f"viewer missed off/on {found['missed_off']}/{found['missed_on']}", flush=True)
    # Only rounds where both sides ran are paired.
    for side in ("this", "other"):
        results[side] = [found for found in results[side] if found["round"] not in failed]
    for side in ("this", "other"):
        runs = results[side]
        print(f"median {side:5} large share {statistics.median(r['large_share'] for r in runs):.0%}, short share "
              f"{statistics.median(r['short_share'] for r in runs):.0%}, replay "
              f"{statistics.median(r['replay'] for r in runs):.0f} MB/s, lost {[r['lost'] for r in runs]}")
    for name in ("large_share", "short_share", "replay"):
        pairs = [a[name] / b[name] for a, b in zip(results["this"], results["other"], strict=True)]
        print(f"paired this/other {name}: {', '.join(f'{p:.2f}' for p in pairs)} "
              f"(median {statistics.median(pairs):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
