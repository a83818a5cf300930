"""The spawn floor: how fast this machine runs ``echo hi`` from one Python process, one at a time.

``python -m bench.spawnfloor N`` prints JSON: jobs/s for stdlib subprocess
(vfork + exec), and with a ``preexec_fn`` (which forces a full fork of the
calling process, as the server's runner does), each started, read to end of
file and reaped sequentially.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time


def rate(count: int, **options) -> float:
    """Sequential spawns per second of echo with these Popen options."""
    echo = shutil.which("echo") or "/bin/echo"
    started = time.perf_counter()
    for _ in range(count):
        proc = subprocess.Popen([echo, "hi"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, **options)
        out, _ = proc.communicate()
        if out != b"hi\n":
            raise SystemExit(f"echo printed {out!r}")
    return count / (time.perf_counter() - started)


def main() -> None:
    """Measure both ways and print JSON."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rate(5)
    print(json.dumps({
        "vfork": rate(count, start_new_session=True),
        "fork_preexec": rate(count, start_new_session=True, preexec_fn=lambda: None),
    }))


if __name__ == "__main__":
    main()
