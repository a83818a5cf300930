"""``python -m bench [--smoke] [--no-profile]``: run the benchmarks against a real gunicorn -k gevent.

The full run writes bench/RESULTS.md; the smoke run (seconds) proves the
harness works end to end and writes bench/out/SMOKE.md. Exit status 1 if a
benchmark broke (lost bytes, a crash, a refused request), whatever the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

from . import machine, report, suite
from .tools import BENCH, OUT, build_helpers, raise_nofile


def main() -> int:
    """Run, print the table, write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds, not minutes; asserts no numbers")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy runs of the full benchmark")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "errors.log").unlink(missing_ok=True)
    raise_nofile()
    build_helpers()
    profile = not args.smoke and not args.no_profile and suite.profiling_available()
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    results = suite.run(smoke=args.smoke, profile=profile)
    seconds = time.monotonic() - clock
    if not args.smoke and not args.no_profile and not profile:
        results.notes.append("py-spy is not installed (.venv/bin/pip install py-spy): no hot spots this run.")
    print(report.text_table(results))
    command = "make bench-smoke" if args.smoke else "make bench"
    target = OUT / "SMOKE.md" if args.smoke else BENCH / "RESULTS.md"
    target.write_text(report.markdown(results, machine.describe(), command, started, seconds))
    report.write_json(results, OUT / ("smoke.json" if args.smoke else "results.json"))
    print(f"\n{seconds:.0f} s; written {target.relative_to(BENCH.parent)}")
    if results.failures:
        print("BROKEN: " + "; ".join(results.failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
