"""``python -m bench.short_jobs_ab OTHER_CHECKOUT``: short jobs of this checkout against another's, interleaved.

Each round runs the short-jobs benchmark of ``make bench`` (``GET /run?command=echo hi``
on a new connection each, 20 clients, one worker) for ``--seconds`` against this
checkout's server, then against OTHER_CHECKOUT's (its own ``.venv``, with its C
extensions built: ``make install`` there), then the other way round in the next
round. It prints jobs/s and the worker's CPU per job for each run, and the medians.
The machine must be quiet: the numbers are only as good as that.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from .server import Server
from .suite import spawn
from .tools import OUT, REPO, build_helpers, raise_nofile


def main() -> int:
    """Run the rounds, print each run and the medians."""
    parser = argparse.ArgumentParser(prog="python -m bench.short_jobs_ab", description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (with its own .venv)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--other-venv-bin", type=Path, help="default: OTHER/.venv/bin")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="an SSECMD_ setting for this checkout's server only (repeatable)")
    parser.add_argument("--other-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="an SSECMD_ setting for the other checkout's server only (repeatable)")
    args = parser.parse_args()
    other = args.other.resolve()
    venv_bin = args.other_venv_bin or other / ".venv" / "bin"
    OUT.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    build_helpers()
    sides = {"this": (REPO, None, _settings(args.setting)), "other": (other, venv_bin, _settings(args.other_setting))}
    results: dict[str, list[dict]] = {"this": [], "other": []}
    for round_number in range(args.rounds):
        order = ["this", "other"] if round_number % 2 == 0 else ["other", "this"]
        for side in order:
            repo, bin_dir, extra = sides[side]
            with Server(name=f"ab-{side}", repo=repo, venv_bin=bin_dir, extra=extra) as server:
                spawn(server, 200, args.clients, seconds=2)  # warm-up
                numbers = spawn(server, 1_000_000, args.clients, seconds=args.seconds)
            results[side].append(numbers)
            cpu_ms = numbers["worker_cpu"] / numbers["jobs_s"] * 1000
            print(f"round {round_number + 1} {side:5} {numbers['jobs_s']:7.0f} jobs/s  "
                  f"worker CPU {numbers['worker_cpu']:.0%}, {cpu_ms:.2f} ms per job", flush=True)
    for side in ("this", "other"):
        rates = [n["jobs_s"] for n in results[side]]
        print(f"median {side:5} {statistics.median(rates):7.0f} jobs/s  (runs: {', '.join(f'{r:.0f}' for r in rates)})")
    change = statistics.median(r["jobs_s"] for r in results["this"]) / statistics.median(
        r["jobs_s"] for r in results["other"]) - 1
    print(f"this checkout against {other}: {change:+.1%}")
    return 0


def _settings(items: list[str]) -> dict[str, str]:
    settings = {}
    for item in items:
        name, _, value = item.partition("=")
        settings[f"SSECMD_{name.upper()}"] = value
    return settings


if __name__ == "__main__":
    sys.exit(main())
