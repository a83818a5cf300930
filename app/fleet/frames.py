"""The frames of a run's event stream, from the run record and its jobs' logs. Pure code: the logs are read
through a function given to it.

Per host, in order: ``host_state`` running (once its job is known), its job's events (each wrapped with its
host and job), then ``host_state`` with its final state once its job's log has been sent to its end (or it
had none). ``run_exit`` once every host's final state has been sent and the run has ended. Every frame's id is
the cursor after it (cursor.py), so a resume sends neither less nor more.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ..store.base import LogRead
from ..streaming.sse import encode_json_event
from .cursor import RunCursor
from .runstate import FINAL_HOST_STATES, RUNNING, HostRun, Run

ReadLog = Callable[[str, int], LogRead | None]  # (job id, after offset) -> what follows, or None: not kept


def _wrapped(event_id: str, kind: str, host: str, job: str, offset: int, data: bytes) -> bytes:
    """A job's event as the run stream sends it: its type, and its data inside ``{"host", "job", "id", "data"}``."""
    return b"".join((
        b"id: ", event_id.encode("ascii"), b"\nevent: ", kind.encode("ascii"),
        b'\ndata: {"host":', json.dumps(host).encode("ascii"), b',"job":', json.dumps(job).encode("ascii"),
        b',"id":', str(offset).encode("ascii"), b',"data":', data, b"}\n\n",
    ))


def _host_state(cursor: RunCursor, index: int, host: HostRun) -> bytes:
    cursor.hosts[index].state = host.state
    return encode_json_event(host.to_json(), event="host_state", event_id=cursor.format())


def _gap(cursor: RunCursor, host: HostRun, missed: int) -> bytes:
    """What a job's log no longer held (its output bytes), where it lay."""
    return encode_json_event({"host": host.host, "job": host.job, "missed_bytes": missed}, event="gap",
                             event_id=cursor.format())


def step(run: Run, cursor: RunCursor, read_log: ReadLog) -> tuple[list[bytes], bool, dict[str, int]]:
    """The frames that can be sent now (advancing ``cursor``), whether more may be read at once, and the jobs
    whose logs may still grow (id -> offset sent through), to wait on."""
    frames: list[bytes] = []
    more = False
    waiting: dict[str, int] = {}
    for index, host in enumerate(run.hosts):
        at = cursor.hosts[index]
        if at.state in FINAL_HOST_STATES:
            continue
        if host.job is not None and at.state != RUNNING:
            # Said once, even when the stream first sees the host already ended: its job's events follow it.
            frames.append(_host_state(cursor, index, HostRun(**{**host.to_json(), "state": RUNNING,
                                                                 "exit_code": None, "reason": None,
                                                                 "ended_at": None})))
        log_done = True
        if host.job is not None:
            read = read_log(host.job, at.offset)
            if read is not None:
                for position, event in enumerate(read.events):
                    if read.missed and position == read.gap_at:
                        frames.append(_gap(cursor, host, read.missed))
                    at.offset = event.id
                    frames.append(_wrapped(cursor.format(), event.kind, host.host, host.job, event.id, event.data))
                if read.missed and read.gap_at >= len(read.events):
                    frames.append(_gap(cursor, host, read.missed))
                log_done = read.finished
                more = more or bool(read.events)
            if not log_done:
                waiting[host.job] = at.offset
        if host.final and log_done:
            frames.append(_host_state(cursor, index, host))
    if not cursor.ended and run.state != "running" and all(h.state in FINAL_HOST_STATES for h in cursor.hosts):
        cursor.ended = True
        frames.append(encode_json_event(run.to_json(), event="run_exit", event_id=cursor.format()))
    return frames, more, waiting
