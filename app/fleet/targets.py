"""Which hosts a run targets, the run's own options, and hosts' liveness from their heartbeats. Pure code."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)  # host names and tags (config.py checks the same)
MAX_TARGETS = 1000  # names or tags in one request
MAX_PARALLEL = 100000
UP_WITHIN = 3.0  # seconds since a host's last heartbeat (beats every second): up, then stale
DOWN_AFTER = 6.0  # ... then down (the heartbeat's TTL: its jobs are being marked lost)
RUN_FIELDS = ("hosts", "tags", "parallel", "stop_on_failure")


class InvalidRun(ValueError):
    """A POST /runs field is wrong; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def host_state(last_heartbeat: float, now: float) -> str:
    """``up``, ``stale`` or ``down``, from how long ago a host last beat."""
    age = now - last_heartbeat
    if age <= UP_WITHIN:
        return "up"
    return "stale" if age <= DOWN_AFTER else "down"


def split_run_request(body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A POST /runs body split into the run's own fields and the job part (checked as POST /jobs checks it)."""
    if not isinstance(body, dict):
        raise InvalidRun("body", "body must be a JSON object")
    if "stdin" in body:
        raise InvalidRun("stdin", "a run's jobs take no input: leave out 'stdin'")
    run = {key: body[key] for key in RUN_FIELDS if key in body}
    job = {key: value for key, value in body.items() if key not in RUN_FIELDS}
    return run, job


def _names(value: Any, parameter: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise InvalidRun(parameter, f"{parameter} must be a non-empty list of names")
    if len(value) > MAX_TARGETS:
        raise InvalidRun(parameter, f"{parameter}: at most {MAX_TARGETS} names")
    for item in value:
        if not isinstance(item, str) or not NAME.fullmatch(item):
            raise InvalidRun(parameter, f"{parameter}: {item!r} is not a name (1-64 of letters, digits, '.', '_', '-')")
    return list(dict.fromkeys(value))


def select_targets(run: Mapping[str, Any], known: Mapping[str, Sequence[str]]) -> list[str]:
    """The target host names: ``hosts`` (each must be known) or ``tags`` (every known host with any of them,
    sorted by name); ``known`` maps every registered host to its tags."""
    if ("hosts" in run) == ("tags" in run):
        raise InvalidRun("hosts", "give exactly one of 'hosts' (a list of host names) or 'tags' (a list of tags)")
    if "hosts" in run:
        names = _names(run["hosts"], "hosts")
        unknown = [name for name in names if name not in known]
        if unknown:
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise InvalidRun("hosts", f"unknown host(s): {', '.join(unknown[:10])}{more} (GET /hosts lists them)")
        return names
    tags = set(_names(run["tags"], "tags"))
    chosen = sorted(name for name, host_tags in known.items() if tags & set(host_tags))
    if not chosen:
        named = ", ".join(sorted(tags)[:10]) + (f" and {len(tags) - 10} more" if len(tags) > 10 else "")
        raise InvalidRun("tags", f"no host has any of the tags {named} (GET /hosts lists them)")
    return chosen


def parse_options(run: Mapping[str, Any]) -> tuple[int | None, bool]:
    """``parallel`` (an integer >= 1, or absent: all at once) and ``stop_on_failure`` (a boolean, default false)."""
    parallel = run.get("parallel")
    if parallel is not None and (
        isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL
    ):
        raise InvalidRun("parallel", f"parallel must be an integer from 1 to {MAX_PARALLEL}")
    stop = run.get("stop_on_failure", False)
    if not isinstance(stop, bool):
        raise InvalidRun("stop_on_failure", "stop_on_failure must be true or false")
    return parallel, stop
