"""py-spy, attached to a worker while a benchmark runs: raw stacks to a file, hot spots as text."""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .tools import VENV_BIN

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """The py-spy executable, if installed (pip install py-spy into the venv)."""
    candidate = VENV_BIN / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


class Profile:
    """``with Profile(pid, path):`` samples the process for as long as the block runs."""

    def __init__(self, pid: int, path: Path, rate: int = 250) -> None:
        self.pid, self.path, self.rate = pid, path, rate
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Profile:
        executable = py_spy()
        if executable is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [executable, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw",
             "--nonblocking", "--output", str(self.path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        time.sleep(0.5)  # let it attach
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "/main/", "/lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['func']} ({file})"


def hot_spots(path: Path, top: int = 12) -> dict:
    """Self time per function, and inclusive time per function of app/, as percentages of the busy samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    if not path.exists():
        return {"samples": 0, "self": [], "inclusive": []}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        frames = [_short(frame) for frame in stack.split(";") if frame and not frame.startswith("process ")
                  and not frame.startswith("thread ")]
        if not frames:
            continue
        total += samples
        own[frames[-1]] += samples
        for name in set(frames):
            if "(app/" in name:
                inclusive[name] += samples
    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / total) for name, n in counter.most_common(top) if n * 1000 >= total]


    return {"samples": total, "self": share(own), "inclusive": share(inclusive)}
