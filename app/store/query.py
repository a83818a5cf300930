"""Finding jobs: GET /jobs's filters, cursors and counts, as a pure function over any store's jobs. Pure.

A page is newest first: ordered by (created_at, id), descending. A cursor is
the opaque token of the last job of a page; ``before=<cursor>`` continues
after it, whatever was started since. ``counts`` are by state, for every
filter but ``state`` itself and the cursor: what a state filter would find.

``page_jobs`` is what ``Store.find_jobs`` does by default over ``list_jobs``;
a store with an index (SQLite) answers the same query itself.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..policy.commandline import display_command
from ..states import JobState

if TYPE_CHECKING:
    from .jobs import Job

QUERY_PARAMETERS = ("limit", "before", "state", "user", "q", "since", "until")
MAX_LIMIT = 500
MAX_TEXT = 256


class InvalidQuery(ValueError):
    """A GET /jobs parameter is wrong: ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter} {message}")
        self.parameter = parameter


@dataclass(frozen=True)
class JobQuery:
    """What to find: filters, where to start, how many."""

    limit: int | None = None  # None: every match
    before: tuple[float, str] | None = None  # (created_at, id) of the last job already seen
    state: str | None = None
    owner: str | None = None
    q: str | None = None  # a substring of the command or the action, any case
    since: float | None = None  # created at or after
    until: float | None = None  # created before


@dataclass
class JobPage:
    """One page of jobs, the cursor of the next (None: no more), and counts by state for the filter."""

    jobs: list[Job]
    next: str | None
    counts: dict[str, int] = field(default_factory=dict)


def encode_cursor(job: Job) -> str:
    """The opaque cursor after ``job``."""
    return base64.urlsafe_b64encode(f"{job.created_at!r}:{job.id}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[float, str]:
    """(created_at, id) from a cursor; InvalidQuery("before") if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        stamp, _, job_id = raw.partition(":")
        created = float(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidQuery("before", "must be a cursor from a previous answer's next") from None
    if not job_id or not math.isfinite(created):
        raise InvalidQuery("before", "must be a cursor from a previous answer's next")
    return created, job_id


def _time(parameter: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidQuery(parameter, "must be an ISO 8601 time (2026-12-01T06:00:00Z) or Unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_job_query(args: Mapping[str, str]) -> JobQuery:
    """GET /jobs's parameters (limit, before, state, user, q, since, until); InvalidQuery names a bad one."""
    values = {}
    limit = args.get("limit")
    if limit is not None:
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            raise InvalidQuery("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
        values["limit"] = int(limit)
    before = args.get("before")
    if before is not None:
        values["before"] = decode_cursor(before)
    state = args.get("state")
    if state is not None:
        if state not in {s.value for s in JobState}:
            raise InvalidQuery("state", f"must be one of: {', '.join(sorted(s.value for s in JobState))}")
        values["state"] = state
    for name, key in (("user", "owner"), ("q", "q")):
        text = args.get(name)
        if text is not None:
            if not text or len(text) > MAX_TEXT:
                raise InvalidQuery(name, f"must be 1 to {MAX_TEXT} characters")
            values[key] = text
    for name in ("since", "until"):
        text = args.get(name)
        if text is not None:
            values[name] = _time(name, text)
    return JobQuery(**values)


def matches(job: Job, query: JobQuery, *, with_state: bool = True) -> bool:
    """Whether a job passes the query's filters (not its cursor)."""
    if with_state and query.state is not None and job.state != query.state:
        return False
    if query.owner is not None and job.owner != query.owner:
        return False
    if query.since is not None and job.created_at < query.since:
        return False
    if query.until is not None and job.created_at >= query.until:
        return False
    if query.q is not None:
        text = display_command(job.argv) + "\n" + (job.action or "")
        if query.q.lower() not in text.lower():
            return False
    return True


def page_jobs(jobs: Iterable[Job], query: JobQuery) -> JobPage:
    """The page ``query`` asks for, from any jobs (in any order)."""
    counts: dict[str, int] = {}
    found = []
    for job in jobs:
        if not matches(job, query, with_state=False):
            continue
        counts[job.state.value] = counts.get(job.state.value, 0) + 1
        if query.state is not None and job.state != query.state:
            continue
        if query.before is not None and (job.created_at, job.id) >= query.before:
            continue
        found.append(job)
    found.sort(key=lambda job: (job.created_at, job.id), reverse=True)
    if query.limit is not None and len(found) > query.limit:
        found = found[: query.limit]
        return JobPage(found, encode_cursor(found[-1]), counts)
    return JobPage(found, None, counts)
