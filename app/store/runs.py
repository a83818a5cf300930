"""Runs kept by a store no other host shares (the memory and history stores): bounded, in this worker. Pure."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

MAX_RUNS = 1000  # the newest runs kept; older ones are forgotten (GET /runs/<id> answers 404)
UNDER_WAY = {"refused": "its start is under way already"}


class LocalRuns:
    """Run records, cancel requests and the one start per run and host, for one worker."""

    def __init__(self, max_runs: int = MAX_RUNS) -> None:
        self.max_runs = max_runs
        self.records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.cancels: set[str] = set()
        self.starts: OrderedDict[tuple[str, str], dict[str, Any] | None] = OrderedDict()

    def save(self, run_id: str, record: dict[str, Any]) -> None:
        """Keep a run's record, as the newest; the oldest beyond ``max_runs`` go (with their cancels)."""
        self.records[run_id] = record
        self.records.move_to_end(run_id)
        while len(self.records) > self.max_runs:
            forgotten, _ = self.records.popitem(last=False)
            self.cancels.discard(forgotten)

    def claim_start(self, run_id: str, host: str) -> dict[str, Any] | None:
        """None: the caller starts it; else the answer of the start there was (or that one is under way)."""
        key = (run_id, host)
        if key in self.starts:
            return self.starts[key] or UNDER_WAY
        self.starts[key] = None
        while len(self.starts) > self.max_runs * 4:
            self.starts.popitem(last=False)
        return None

    def record_start(self, run_id: str, host: str, answer: dict[str, Any] | None) -> None:
        """What the start that ``claim_start`` let through answered; None: it started nothing (claim released)."""
        if answer is None:
            self.starts.pop((run_id, host), None)
        else:
            self.starts[(run_id, host)] = answer
