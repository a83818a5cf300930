"""RedisStore: jobs, their logs and channels in Redis Streams, shared by every worker of every host.

Keys (all under ``ssec:``):

- ``job:<id>``: the job's record (a hash, codec.py) with its log's state:
  ``_last`` (newest offset), ``_dropped`` (trimmed through), ``_fin`` (the
  terminal event is in), ``_start``/``_start_id`` (the pinned start event),
  ``_host``/``_worker`` (who runs it).
- ``log:job:<id>``, ``log:channel:<name>``: the logs, one stream each, entry
  ids ``<offset>-0``.
- ``meta:channel:<name>``: a channel's ``epoch``, ``last``, ``dropped``,
  ``bytes``; made with a new epoch whenever it is found missing.
- ``jobs`` (all jobs by creation time), ``finished`` (by end time, for
  ``max_finished_jobs``), ``running:<host>``, ``user:<name>`` (running job
  ids), ``channels`` (names), ``resets`` and ``wake:<host>:<pid>`` (reader.py),
  ``ctl:<host>`` (stop requests for the jobs of a host; the request is also
  stored in the job's record, ``_stop``, for a worker that missed the message;
  and input for their stdin, answered on ``input-reply:<token>``, a list the
  asking worker waits on, with ``input-reply:<token>:claim`` that the writer
  takes first; both expire soon after).
- ``run:<id>`` (a run's record), ``runs`` (the newest runs' ids by creation
  time, for GET /runs), and ``runs:changed``: one entry per save of
  any run's record (``run``: its id), which every worker's reader follows, so a
  run's streams on any host look at its record again at once, not on a timer;
  and one per end of a run's job (``job``: its id, in the MULTI that records
  the end; and for any job marked lost, liveness.py), so the run's coordinator
  goes on at once.

The worker that starts a job spawns and pumps it, as with the memory store:
its runner appends to a local ``EventLog`` (flow control, and this worker's
viewers read and are delivered from it directly), and each event also goes to
Redis through the batching writer (writer.py), with the same id and bytes.

Other workers read a log from Redis until they have caught up with it; then
they keep a local mirror of it (an ``EventLog`` begun after the offset they
caught up at) that the worker's one reader (reader.py) appends to, and that
delivers to the parked streams through the listener, as the memory store's
logs do. A mirror nobody has read for a while is dropped.

Liveness (liveness.py): every worker beats; a job whose worker or host went
away becomes ``lost``, once, with one ``exit`` event.

``max_running_jobs`` stays per worker (it protects the host); per-user
running counts are shared.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import gevent
import redis
from gevent.event import Event
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from ...config import Settings
from ...policy.messages import SYSTEM_CHANNELS, check_channel_name
from ...policy.ratelimit import RateLimiter
from ...states import LIVE_STATES, JobState
from ...streaming.sse import encode_json_frame
from ..base import (
    CHANNEL_PREFIX,
    JOB_PREFIX,
    TERMINAL_EVENTS,
    InputReply,
    LogEvent,
    LogListener,
    LogRead,
    NoAnswer,
    Pacing,
    Position,
    Store,
    StoreUnavailable,
    Subscription,
    TooManyChannels,
    TooManyJobs,
    UnknownLog,
    channel_key,
    job_key,
    new_epoch,
)
from ..budget import MemoryBudget
from ..eventlog import EVENT_OVERHEAD_BYTES, EventLog
from ..jobs import Job
from ..runs import MAX_RUNS, RunChanges
from . import liveness, pacing
from .codec import encode_fields, event_from_entry, event_from_tail, job_fields, job_from_fields
from .reader import BLOCK_MS, StreamReader
from .scripts import CHANNEL_APPEND, JOB_APPEND, JOB_ENDED, JOB_FINISH, TOKEN_BUCKET
from .writer import JobWriter

log = logging.getLogger(__name__)

PREFIX = "ssec:"
INPUT_REPLY_TTL = 30  # seconds an answer to routed input is kept for an asking worker that gave up on it
POOL_SIZE = 16  # connections per worker for commands (the reader has its own): requests wait for one, never fail
CHANNEL_TTL = 7 * 24 * 3600  # seconds: a channel nobody publishes to or subscribes to this long is forgotten
RUN_START_WAIT = 5.0  # seconds a repeated start of a run's job waits for the first one's answer
MIRROR_IDLE = 30.0  # seconds: a mirror nobody has read or waited on this long is dropped (plus 2 heartbeats)


def _shared(method: Callable) -> Callable:
    """Redis unreachable during the call: StoreUnavailable (a 503, or a stream's ``retry:``), never a crash."""

    @functools.wraps(method)
    def call(self: RedisStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(str(exc) or exc.__class__.__name__) from None

    return call


def _flat(fields: Mapping[str, Any]) -> list[Any]:
    """A mapping as the flat field, value list HSET and the scripts take."""
    return [item for pair in fields.items() for item in pair]


def _stream(key: str) -> str:
    return f"{PREFIX}log:{key}"


def _job_hash(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def _input_claim(reply_key: str) -> str:
    return f"{reply_key}:claim"


def _control_stream(host: str) -> str:
    return f"{PREFIX}ctl:{host}"


def _channel_meta(name: str) -> str:
    return f"{PREFIX}meta:channel:{name}"


class RedisStore(Store):
    """The shared store (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.host_name
        self.worker = os.getpid()
        # A few quick retries (redis-py's default is 10, up to a second apart): a request fails in well under a
        # second when Redis is down, and a 503 tells the client to come back.
        pool = redis.BlockingConnectionPool.from_url(
            settings.store_url, max_connections=POOL_SIZE, timeout=5, socket_timeout=5, socket_connect_timeout=2,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), 3),
        )
        self.client = redis.Redis(connection_pool=pool)
        # The reader blocks up to BLOCK_MS: its socket timeout must be above that (reference: redis-py #2807).
        self.reader_client = redis.Redis.from_url(
            settings.store_url, socket_timeout=BLOCK_MS / 1000 + 10, socket_connect_timeout=5,
            retry=Retry(NoBackoff(), 0), single_connection_client=True,
        )
        self._channel_append = self.client.register_script(CHANNEL_APPEND)
        self.budget = MemoryBudget(settings.max_buffered_bytes)
        self._listener: LogListener | None = None
        self._logs: dict[str, EventLog] = {}  # by key: the logs of jobs run here, and mirrors
        self._used: dict[str, float] = {}  # by key: when a mirror was last read or waited on
        self._owned: dict[str, Job] = {}  # jobs run by this worker, while their log is kept here
        self._running: set[str] = set()  # ids of jobs running in this worker
        self._subscribers: dict[str, int] = {}
        self._by_user: dict[str, int] = {}
        self._wake_stream = f"{PREFIX}wake:{self.host}:{self.worker}"
        self.writer = JobWriter(
            self.client, self.client.register_script(JOB_APPEND),
            lambda job_id: [_job_hash(job_id), _stream(job_key(job_id))], settings.job_buffer_bytes,
            settings.finished_job_ttl, lambda job_id: pacing.pace_key(PREFIX, job_id),
        )
        self.viewers = pacing.ViewerPublisher(
            self.client, f"{self.host}:{self.worker}", lambda key: pacing.pace_key(PREFIX, key[len(JOB_PREFIX):]))
        self._stop_handler: Callable[[str, str], object] | None = None
        self._input_handler: Callable[[str, bytes | None], InputReply] | None = None
        self._run_start_handler: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self._run_adopter: Callable[[dict[str, Any]], None] | None = None
        self._run_changes = RunChanges()
        self._job_ends = RunChanges()  # by job id: Store.job_ended
        self.reader = StreamReader(
            self.reader_client, self._wake_stream,
            {f"{PREFIX}resets": self._epochs_changed, _control_stream(self.host): self._control,
             liveness.RUN_CHANGES: self._runs_changed},
            self._entries, self._reconnected, self._drop_mirrors,
            lambda: self.client.xadd(self._wake_stream, {"w": "1"}, maxlen=16, approximate=True),
        )
        self._finish_script = self.client.register_script(JOB_FINISH)
        self._ended_script = self.client.register_script(JOB_ENDED)
        self.reader.start()
        self._janitor = gevent.spawn(self._drop_idle_mirrors)
        self._liveness = gevent.spawn(self._keep_alive)

    def _keep_alive(self) -> None:
        """Beat every BEAT_INTERVAL; sweep for jobs of dead workers and hosts every SWEEP_INTERVAL."""
        next_sweep = 0.0
        while True:
            try:
                liveness.beat(self.client, self.host, self.worker)
                liveness.register_host(self.client, self.host, self.settings.host_tags)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + liveness.SWEEP_INTERVAL
                    for job_id in liveness.sweep(self.client, self.settings.finished_job_ttl):
                        log.warning("job %s is lost: the worker running it went away", job_id)
                    self._adopt_orphaned_runs()
            except Exception as exc:  # Redis unreachable: the reader and /healthz tell; beat again when it is back
                log.debug("heartbeat failed: %s", exc)
            gevent.sleep(liveness.BEAT_INTERVAL)

    # The job registry.

    @_shared
    def create_job(
        self,
        argv: Iterable[str],
        timeout: float,
        origin: str,
        *,
        owner: str,
        action: str | None = None,
        params: dict[str, Any] | None = None,
        owner_limit: int | None = None,
        request_id: str | None = None,
        stderr: str = "separate",
        stdin: bool = False,
    ) -> Job:
        """Register a new job run by this worker, or raise TooManyJobs (this worker's, or the owner's share)."""
        if len(self._running) >= self.settings.max_running_jobs:
            raise TooManyJobs()
        if owner_limit is not None and self.running_count_of(owner) >= owner_limit:
            raise TooManyJobs(per_owner=True)
        job = Job(id=secrets.token_hex(8), argv=tuple(argv), timeout=timeout, origin=origin, owner=owner,
                  action=action, params=params, request_id=request_id, stderr=stderr, stdin=stdin)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(_job_hash(job.id), mapping=job_fields(
            job, _host=self.host, _worker=str(self.worker), _last="0", _dropped="0"))
        pipe.zadd(f"{PREFIX}jobs", {job.id: job.created_at})
        pipe.sadd(f"{PREFIX}running:{self.host}", job.id)
        pipe.sadd(f"{PREFIX}user:{owner}", job.id)
        pipe.execute()
        key = job_key(job.id)
        self._logs[key] = OwnedJobLog(self.writer, job.id, self.settings.job_buffer_bytes, key=key,
                                      budget=self.budget, deliver=self._deliver_owned)
        self._owned[job.id] = job
        self._running.add(job.id)
        self._used[key] = time.monotonic()
        return job

    def _deliver_owned(self, key: str, event: LogEvent) -> None:
        # A job run here: to Redis (batched), and to this worker's parked streams at once.
        self.writer.add(key[len(JOB_PREFIX):], event)
        if self._listener is not None:
            self._listener.deliver(key, event)

    @_shared
    def get_job(self, job_id: str) -> Job | None:
        """A job by id (this worker's own record of a job it runs), or None."""
        job = self._owned.get(job_id)
        if job is not None:
            self._sync_counters(job)
            return job
        return job_from_fields(self.client.hgetall(_job_hash(job_id)))

    def _sync_counters(self, job: Job) -> None:
        log_ = self._logs.get(job_key(job.id))
        if log_ is not None:
            job.output_bytes = log_.output_bytes
            job.dropped_bytes = log_.dropped_bytes

    @_shared
    def list_jobs(self, *, state: str | None = None, owner: str | None = None) -> list[Job]:
        """Every host's kept jobs, newest first; only those in ``state``, or of ``owner``, if given."""
        ids = [job_id.decode() for job_id in self.client.zrevrange(f"{PREFIX}jobs", 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(_job_hash(job_id))
        jobs, gone = [], []
        for job_id, fields in zip(ids, pipe.execute(), strict=True):
            job = self._owned.get(job_id) or job_from_fields(fields)
            if job is None:
                gone.append(job_id)  # expired (finished_job_ttl) or pruned
                continue
            if (state is None or job.state == state) and (owner is None or job.owner == owner):
                jobs.append(job)
        if gone:
            self.client.zrem(f"{PREFIX}jobs", *gone)
        for job in jobs:
            if job.id in self._owned:
                self._sync_counters(job)
        return jobs

    def mark_started(self, job_id: str, pid: int) -> None:
        """Record the pid and start time."""
        job = self._owned[job_id]
        job.pid = pid
        job.started_at = time.time()
        fields = encode_fields({"pid": pid, "started_at": job.started_at})
        self.writer.update_record(job_id, [("HSET", _job_hash(job_id), *_flat(fields))])

    def mark_stopping(self, job_id: str) -> None:
        """A running job is being stopped."""
        job = self._owned[job_id]
        if job.state is JobState.RUNNING:
            job.state = JobState.STOPPING
            state = encode_fields({"state": job.state})["state"]
            self.writer.update_record(job_id, [("HSET", _job_hash(job_id), "state", state)])

    def finish_job(self, job_id: str, **fields: Any) -> Job:
        """Record how a job ended; a finished job is kept ``finished_job_ttl``, and among ``max_finished_jobs``."""
        job = self._owned[job_id]
        for name, value in fields.items():
            setattr(job, name, value)
        if job.ended_at is None:
            job.ended_at = time.time()
        self._sync_counters(job)
        changed = {**fields, "ended_at": job.ended_at, "state": job.state}
        record = _flat(encode_fields(changed))
        ended = job.finished and job_id in self._running
        if ended:
            self._running.discard(job_id)
        # With the job's last events (its exit), in one MULTI: a reader elsewhere that has the exit has the record.
        self.writer.update_record(job_id, self._finish_commands(job, record, ended),
                                  [self._finish_script, self._ended_script])
        if ended:  # a coordinator in this worker reads this record (_owned) at once; others hear of it from Redis
            self._job_ends.changed(job_id)
        return job

    def _finish_commands(self, job: Job, record: list[str], ended: bool) -> list[tuple]:
        commands: list[tuple] = [("EVALSHA", self._finish_script.sha, 1, _job_hash(job.id), *record)]
        if ended:
            commands.append(("EVALSHA", self._ended_script.sha, 5, _job_hash(job.id), f"{PREFIX}running:{self.host}",
                             f"{PREFIX}user:{job.owner}", f"{PREFIX}finished", f"{PREFIX}jobs", job.id, job.ended_at,
                             int(self.settings.finished_job_ttl) or 1, self.settings.max_finished_jobs, PREFIX))
            if job.origin == "runs":
                # In the same MULTI as the record: the run's coordinator, on any host, looks at it at once.
                commands.append(("XADD", liveness.RUN_CHANGES, "MAXLEN", "~", liveness.RUN_CHANGES_KEPT, "*",
                                 "job", job.id))
        return commands

    def running_count(self) -> int:
        """How many jobs run in this worker now (``max_running_jobs`` is per worker)."""
        return len(self._running)

    @_shared
    def running_count_of(self, owner: str) -> int:
        """How many jobs ``owner`` runs now, on every host."""
        return self.client.scard(f"{PREFIX}user:{owner}")

    def local_log(self, job_id: str) -> EventLog:
        """The log of a job this worker runs."""
        if job_id not in self._owned:
            raise UnknownLog(job_key(job_id))
        return self._logs[job_key(job_id)]

    # Event logs, by key.

    @_shared
    def append(self, key: str, kind: str, payload: Any, raw: bytes = b"", audience: str | None = None) -> LogEvent:
        """Append to a channel (in Redis, made if need be) or to a job this worker runs."""
        if key.startswith(CHANNEL_PREFIX):
            name = key[len(CHANNEL_PREFIX):]
            check_channel_name(name)
            tail, _ = encode_json_frame(payload, kind)
            epoch, offset = self._run_channel_script(name, kind, tail, audience)
            return event_from_tail(offset, kind, tail, epoch, b"", audience)
        log_ = self._logs.get(key)
        if log_ is None or key[len(JOB_PREFIX):] not in self._owned:
            raise UnknownLog(key)
        return log_.append(kind, payload, raw, audience)

    def _run_channel_script(self, name: str, kind: str = "", tail: bytes = b"", audience: str | None = None,
                            ensure_only: bool = False) -> tuple[str, int]:
        settings = self.settings
        size = len(tail) + 24 + EVENT_OVERHEAD_BYTES  # 24: the id line the frame gets back when read
        try:
            epoch, offset = self._channel_append(
                keys=[_channel_meta(name), _stream(channel_key(name)), f"{PREFIX}channels", f"{PREFIX}resets",
                      _channel_meta("")],
                args=[new_epoch(), kind, tail, audience or "", size, settings.channel_history_bytes,
                      settings.channel_history, name, "1" if ensure_only else "0", settings.max_channels,
                      CHANNEL_TTL],
            )
        except redis.ResponseError as exc:
            if "TOOMANY" in str(exc):
                raise TooManyChannels() from None
            raise
        return epoch.decode(), int(offset)

    def _local(self, key: str, epoch: str, offset: int) -> EventLog | None:
        """The local log that can answer a read after (epoch, offset), if any."""
        log_ = self._logs.get(key)
        if log_ is None:
            return None
        if key.startswith(JOB_PREFIX) and key[len(JOB_PREFIX):] in self._owned:
            return log_  # the whole log of a job run here
        if epoch == log_.epoch and offset >= log_.retained_from:
            self._used[key] = time.monotonic()
            return log_
        return None

    @_shared
    def read(self, key: str, after: Position | int, limit: int = 512, *, raw: bool = True) -> LogRead:
        """Up to ``limit`` events after ``after``: from a local log where one covers it, else from Redis."""
        epoch, offset = ("", after) if after.__class__ is int else after
        local = self._local(key, epoch, offset)
        if local is not None:
            if epoch != local.epoch and (epoch or offset):
                return local.read_after(local.retained_from, limit, reset=True)
            return local.read_after(offset, limit)
        if key.startswith(JOB_PREFIX):
            return self._read_job(key, offset, limit)
        if key.startswith(CHANNEL_PREFIX):
            return self._read_channel(key, epoch, offset, limit)
        raise UnknownLog(key)

    def _read_job(self, key: str, offset: int, limit: int) -> LogRead:
        pipe = self.client.pipeline(transaction=True)
        pipe.hmget(_job_hash(key[len(JOB_PREFIX):]), "_last", "_dropped", "_fin", "_start", "_start_id", "id")
        pipe.xrange(_stream(key), min=str(offset + 1), count=limit)
        (last, dropped, fin, start_tail, start_id, exists), entries = pipe.execute()
        if exists is None:
            raise UnknownLog(key)
        last, dropped, start_id = int(last or 0), int(dropped or 0), int(start_id or 0)
        events = [event_from_entry(entry_id, fields) for entry_id, fields in entries]
        gap_at = 0
        if start_id and offset < start_id:
            if not events or events[0].id != start_id:
                events.insert(0, event_from_tail(start_id, "start", start_tail))
            gap_at = 1
        more = len(entries) == limit and events[-1].id < last
        finished = fin == b"1" and not more
        if not finished and not more:
            self._mirror(key, "", last)
        return LogRead(events=events, missed=max(0, dropped - max(offset, start_id)), finished=finished,
                       last_id=last, gap_at=gap_at)

    def _read_channel(self, key: str, epoch: str, offset: int, limit: int) -> LogRead:
        name = key[len(CHANNEL_PREFIX):]
        meta = self.client.hmget(_channel_meta(name), "epoch", "last", "dropped")
        if meta[0] is None:
            self._run_channel_script(name, ensure_only=True)  # flushed, or restarted without persistence
            meta = self.client.hmget(_channel_meta(name), "epoch", "last", "dropped")
            if meta[0] is None:
                raise UnknownLog(key)
        current, last, dropped = meta[0].decode(), int(meta[1] or 0), int(meta[2] or 0)
        reset = epoch != current and bool(epoch or offset)
        if reset:
            offset = dropped
        entries = self.client.xrange(_stream(key), min=str(offset + 1), count=limit)
        events = [event_from_entry(entry_id, fields, current) for entry_id, fields in entries]
        more = len(entries) == limit and events[-1].id < last
        if not more:
            self._mirror(key, current, max(last, events[-1].id if events else 0))
        return LogRead(events=events, missed=max(0, dropped - offset), finished=False, last_id=last,
                       epoch=current, reset=reset)

    def _mirror(self, key: str, epoch: str, after: int) -> None:
        """Follow ``key`` from after ``after`` on, in a local mirror fed by the reader (if not followed yet)."""
        if key in self._logs:
            return
        channel = key.startswith(CHANNEL_PREFIX)
        settings = self.settings
        mirror = EventLog(
            settings.channel_history_bytes if channel else settings.job_buffer_bytes, key=key, epoch=epoch,
            max_events=settings.channel_history if channel else None,
            terminal_kinds=frozenset() if channel else TERMINAL_EVENTS, pin_start=not channel, budget=self.budget,
            deliver=self._listener.deliver if self._listener is not None else None,
        )
        mirror.begin_after(after)
        self._logs[key] = mirror
        self._used[key] = time.monotonic()
        self.reader.follow(_stream(key), after)

    def _entries(self, stream: str, entries: list) -> None:
        """The reader read ``entries`` of a followed stream: into its mirror (and so to the parked streams)."""
        key = stream[len(PREFIX) + 4:]
        mirror = self._logs.get(key)
        if mirror is None or key[len(JOB_PREFIX):] in self._owned:
            self.reader.unfollow(stream)
            return
        for entry_id, fields in entries:
            event = event_from_entry(entry_id, fields, mirror.epoch)
            if event.id <= mirror.last_id or mirror.finished:
                continue
            # Each id is the one before it plus what the event counts (its output bytes, or 1): a larger jump
            # means the stream was trimmed past entries this reader had not read yet. XREAD says nothing of
            # that, so the mirror goes, and its streams read again from Redis, which tells them the gap.
            if event.id - (len(event.raw) or 1) != mirror.last_id:
                self._drop_mirror(key)
                if self._listener is not None:
                    self._listener.reset(key)
                return
            mirror.add_event(event)
        if mirror.finished:
            self.reader.unfollow(stream)

    def _drop_mirror(self, key: str) -> None:
        mirror = self._logs.pop(key, None)
        self._used.pop(key, None)
        if mirror is not None:
            mirror.detach()
            self.reader.unfollow(_stream(key))

    def _epochs_changed(self, entries: list) -> None:
        """Channels have a new epoch: mirrors of older ones go, and their streams read again (and reset)."""
        for _, fields in entries:
            key, epoch = fields[b"key"].decode(), fields[b"epoch"].decode()
            mirror = self._logs.get(key)
            if mirror is not None and mirror.epoch != epoch and key.startswith(CHANNEL_PREFIX):
                self._drop_mirror(key)
                if self._listener is not None:
                    self._listener.reset(key)

    def _drop_mirrors(self) -> None:
        """The reader lost Redis, or found it again (restarted, flushed): every mirror may be stale, so every
        mirror goes and its streams read again (from Redis: while it is down they end with ``retry:``). The
        logs of jobs run here stay: their viewers here go on."""
        for key in [k for k in self._logs if not (k.startswith(JOB_PREFIX) and k[len(JOB_PREFIX):] in self._owned)]:
            self._drop_mirror(key)
            if self._listener is not None:
                self._listener.reset(key)

    def _reconnected(self) -> None:
        """Back after an outage: mirrors go (see _drop_mirrors); stop requests for this worker's jobs made
        meanwhile are found in the jobs' records; runs' records saved meanwhile are looked at again."""
        self._drop_mirrors()
        self._run_changes.changed_all()
        self._job_ends.changed_all()
        running = sorted(self._running)
        if running:
            pipe = self.client.pipeline(transaction=False)
            for job_id in running:
                pipe.hget(_job_hash(job_id), "_stop")
            for job_id, reason in zip(running, pipe.execute(), strict=True):
                if reason:
                    self._stop_here(job_id, reason.decode())

    # Stopping jobs that run elsewhere.

    @_shared
    def request_stop(self, job_id: str, reason: str) -> bool:
        """Ask the worker running the job to stop it: a stored request, and a message on its host's control
        stream (read by every worker of that host; the one running it acts)."""
        host = self._live_host(job_id)
        if host is None:
            return False
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(_job_hash(job_id), "_stop", reason)
        pipe.xadd(_control_stream(host), {"stop": job_id, "reason": reason}, maxlen=1000, approximate=True)
        pipe.execute()
        return True

    def set_stop_handler(self, handler: Callable[[str, str], object]) -> None:
        """The runner's ``stop``: what a stop request for a job of this worker calls."""
        self._stop_handler = handler

    def _control(self, entries: list) -> None:
        for _, fields in entries:
            job_id = fields.get(b"stop", b"").decode()
            if job_id in self._running:
                self._stop_here(job_id, fields[b"reason"].decode())
            job_id = fields.get(b"input", b"").decode()
            if job_id in self._running:
                self._input_here(job_id, fields)
            if b"run_start" in fields:
                self._run_start_here(fields)

    def _stop_here(self, job_id: str, reason: str) -> None:
        if self._stop_handler is not None and job_id in self._running:
            self._stop_handler(job_id, reason)

    # Input for jobs that run elsewhere.

    @_shared
    def request_input(self, job_id: str, data: bytes | None, timeout: float) -> InputReply | None:
        """Send the input on the control stream of the job's host (the worker running it writes it) and wait,
        cooperatively and up to ``timeout``, for that worker's answer on a reply list of this request's own.

        A claim key makes a timeout safe to retry: the owner takes it (DEL) before it writes, and a requester
        that stops waiting takes it back first; if the owner had it, the answer is waited for once more."""
        host = self._live_host(job_id)
        if host is None:
            return None
        reply_key = f"{PREFIX}input-reply:{secrets.token_hex(12)}"
        fields: dict[str, str | bytes] = {"input": job_id, "reply": reply_key}
        if data is None:
            fields["eof"] = "1"
        else:
            fields["data"] = data
        pipe = self.client.pipeline(transaction=True)
        pipe.set(_input_claim(reply_key), "1", ex=INPUT_REPLY_TTL)
        pipe.xadd(_control_stream(host), fields, maxlen=1000, approximate=True)
        pipe.execute()
        answer = self.client.blpop([reply_key], timeout=timeout)
        if answer is None:
            if self.client.delete(_input_claim(reply_key)):  # never taken: nothing was written
                if self._live_host(job_id) is None:  # it ended meanwhile: nobody was left to write to
                    return InputReply(refused="job_not_running", message=f"job {job_id} is not running")
                raise NoAnswer(f"the worker running job {job_id} did not answer within {timeout:g} s; "
                               "nothing was written")
            answer = self.client.blpop([reply_key], timeout=timeout)  # taken: the write is done, its answer near
            if answer is None:
                raise NoAnswer(f"the worker running job {job_id} took the input but did not answer within "
                               f"{2 * timeout:g} s; it may have been written")
        reply = json.loads(answer[1])
        return InputReply(reply["written"], reply["refused"], reply["message"])

    def set_input_handler(self, handler: Callable[[str, bytes | None], InputReply]) -> None:
        """The service's non-blocking write: what input for a job of this worker calls."""
        self._input_handler = handler

    def _live_host(self, job_id: str) -> str | None:
        """The host running ``job_id``, or None if it is not running (unknown, or ended)."""
        host, state, fin = self.client.hmget(_job_hash(job_id), "_host", "state", "_fin")
        if host is None or fin == b"1" or JobState(json.loads(state)) not in LIVE_STATES:
            return None
        return host.decode()

    def _input_here(self, job_id: str, fields: dict) -> None:
        """Write (it never waits, so the reader does it in order) and answer the asking worker in the background."""
        reply_key = fields[b"reply"].decode()
        if self._input_handler is None:
            return
        try:
            if not self.client.delete(_input_claim(reply_key)):  # the asking worker gave up: write nothing
                return
        except redis.RedisError as exc:  # the asking worker times out, and nothing was written
            log.warning("could not take an input request: %s", exc)
            return
        reply = self._input_handler(job_id, None if fields.get(b"eof") == b"1" else fields.get(b"data", b""))
        answer = json.dumps({"written": reply.written, "refused": reply.refused, "message": reply.message})
        gevent.spawn(self._answer_input, reply_key, answer)

    def _answer_input(self, reply_key: str, answer: str) -> None:
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.rpush(reply_key, answer)
            pipe.expire(reply_key, INPUT_REPLY_TTL)
            pipe.execute()
        except redis.RedisError as exc:  # the asking worker answers 503: written, but unconfirmed
            log.warning("could not answer an input request: %s", exc)

    # Fleets (issue 20): hosts, runs, and a run's jobs started on their hosts.

    @_shared
    def list_hosts(self) -> list[dict[str, Any]] | None:
        """Every host that registered (liveness.register_host), with its running jobs counted now."""
        return liveness.list_hosts(self.client)

    @_shared
    def save_run(self, run_id: str, record: dict[str, Any], ttl: float) -> None:
        """The run's record, for every host's workers (kept ``ttl`` s after the last save); a running run is also
        listed for the sweep that hands over runs whose coordinator went away."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(f"{PREFIX}run:{run_id}", json.dumps(record), ex=max(int(ttl), 1))
        if record.get("state") == "running":
            pipe.sadd(f"{PREFIX}runs:live", run_id)
        else:
            pipe.srem(f"{PREFIX}runs:live", run_id)
        # Listed by creation time (GET /runs), the newest MAX_RUNS only; an expired record is dropped when listed.
        pipe.zadd(f"{PREFIX}runs", {run_id: record.get("created_at", 0)})
        pipe.zremrangebyrank(f"{PREFIX}runs", 0, -MAX_RUNS - 1)
        # In the same MULTI as the record: a reader told of this entry then reads this record (or a newer one).
        pipe.xadd(liveness.RUN_CHANGES, {"run": run_id}, maxlen=liveness.RUN_CHANGES_KEPT, approximate=True)
        pipe.execute()

    @_shared
    def list_runs(self, limit: int, user: str | None = None) -> list[dict[str, Any]]:
        """Every host's newest runs, read newest first a page at a time until ``limit`` are found."""
        ids = [run_id.decode() for run_id in self.client.zrevrange(f"{PREFIX}runs", 0, -1)]
        found: list[dict[str, Any]] = []
        gone: list[str] = []
        page = max(limit, 50)
        for start in range(0, len(ids), page):
            chunk = ids[start:start + page]
            for run_id, text in zip(chunk, self.client.mget([f"{PREFIX}run:{i}" for i in chunk]), strict=True):
                if text is None:
                    gone.append(run_id)  # expired (finished_job_ttl)
                    continue
                record = json.loads(text)
                if user is None or record.get("user") == user:
                    found.append(record)
            if len(found) >= limit:
                break
        if gone:
            self.client.zrem(f"{PREFIX}runs", *gone)
        return found[:limit]

    def run_changed(self, run_id: str) -> Event:
        """Set when this worker's reader sees the run's next save (from any host), or after a reader outage."""
        return self._run_changes.event(run_id)

    def job_ended(self, job_id: str) -> Event:
        """Set when this worker's reader sees the end of the run's job (from any host; at once for a job run
        here), or after a reader outage."""
        return self._job_ends.event(job_id)

    def _runs_changed(self, entries: list) -> None:
        """The reader read saves of runs' records, or ends of runs' jobs: their streams and coordinators in this
        worker look again."""
        for _, fields in entries:
            if b"run" in fields:
                self._run_changes.changed(fields[b"run"].decode())
            elif b"job" in fields:
                self._job_ends.changed(fields[b"job"].decode())

    @_shared
    def claim_run_start(self, run_id: str, host: str) -> dict[str, Any] | None:
        """The first start of a run's job on a host claims it (SET NX); a later one (from a coordinator that took
        the run over) gets the first one's answer, waiting briefly while that start is under way."""
        key = f"{PREFIX}run-start:{run_id}:{host}"
        if self.client.set(key, "", nx=True, ex=max(int(self.settings.finished_job_ttl), 1)):
            return None
        deadline = time.monotonic() + RUN_START_WAIT
        while True:
            answer = self.client.get(key)
            if answer:
                return json.loads(answer)
            if answer is None or time.monotonic() > deadline:  # expired, or the first start never answered
                return {"refused": "an earlier start of it on this host did not finish; it was not started again"}
            gevent.sleep(0.1)

    @_shared
    def record_run_start(self, run_id: str, host: str, answer: dict[str, Any] | None) -> None:
        """What the claimed start answered, for a later one to get; None releases the claim (nothing started)."""
        key = f"{PREFIX}run-start:{run_id}:{host}"
        if answer is None:
            self.client.delete(key)
        else:
            self.client.set(key, json.dumps(answer), ex=max(int(self.settings.finished_job_ttl), 1))

    @_shared
    def run_taken_over(self, run_id: str, host: str, worker: int) -> bool:
        """Whether another worker adopted the run from ``host``'s ``worker`` (after a Redis outage long enough
        for that worker's heartbeat to lapse, say): that worker then stops coordinating it."""
        return bool(self.client.exists(f"{PREFIX}run-adopt:{run_id}:{host}:{worker}"))

    def set_run_adopter(self, adopter: Callable[[dict[str, Any]], None]) -> None:
        """The service's adoption of a run whose coordinating worker went away."""
        self._run_adopter = adopter

    def _adopt_orphaned_runs(self) -> None:
        """Every running run whose coordinating worker has no heartbeat is taken over by one worker (the first to
        set its adoption key), which coordinates it from where its record is."""
        if self._run_adopter is None:
            return
        for run_id in [r.decode() for r in self.client.smembers(f"{PREFIX}runs:live")]:
            text = self.client.get(f"{PREFIX}run:{run_id}")
            record = json.loads(text) if text is not None else None
            if record is None or record.get("state") != "running":
                self.client.srem(f"{PREFIX}runs:live", run_id)
                continue
            host, worker = record.get("coordinator", ""), record.get("coordinator_worker", 0)
            if self.client.exists(liveness.heartbeat_key(host, worker)):
                continue
            # One adopter per coordinator that went away: a later adopter's own death hands it on again.
            if self.client.set(f"{PREFIX}run-adopt:{run_id}:{host}:{worker}", f"{self.host}:{self.worker}",
                               nx=True, ex=max(int(self.settings.finished_job_ttl), 1)):
                self._run_adopter(record)

    @_shared
    def load_run(self, run_id: str) -> dict[str, Any] | None:
        """A run's record, from whichever host coordinates it."""
        text = self.client.get(f"{PREFIX}run:{run_id}")
        return None if text is None else json.loads(text)

    @_shared
    def request_run_cancel(self, run_id: str) -> None:
        """A flag the run's coordinator, wherever it is, reads on its next turn."""
        self.client.set(f"{PREFIX}run-cancel:{run_id}", "1", ex=max(int(self.settings.finished_job_ttl), 1))

    @_shared
    def run_cancel_requested(self, run_id: str) -> bool:
        """Whether the run was cancelled through any host."""
        return bool(self.client.exists(f"{PREFIX}run-cancel:{run_id}"))

    @_shared
    def start_on_host(self, host: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Ask ``host``'s workers, on its control stream, to start a run's job; the first to take the claim does
        (its own config decides) and answers on a reply list of this request's own, as routed input is.

        Nobody taking the claim within ``timeout``: the claim is taken back (so nothing starts late) and the
        host is unreachable. Taken but not answered within another ``timeout``: unreachable too, with a note
        that the job may have started."""
        reply_key = f"{PREFIX}run-reply:{secrets.token_hex(12)}"
        pipe = self.client.pipeline(transaction=True)
        pipe.set(_input_claim(reply_key), "1", ex=INPUT_REPLY_TTL)
        pipe.xadd(_control_stream(host), {"run_start": json.dumps(request), "reply": reply_key},
                  maxlen=1000, approximate=True)
        pipe.execute()
        answer = self.client.blpop([reply_key], timeout=timeout)
        if answer is None:
            if self.client.delete(_input_claim(reply_key)):
                return {"unreachable": f"no worker of host {host} took the request within {timeout:g} s"}
            answer = self.client.blpop([reply_key], timeout=timeout)
            if answer is None:
                return {"unreachable": f"host {host} took the request but did not answer within {2 * timeout:g} s"}
        return json.loads(answer[1])

    def set_run_start_handler(self, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """The service's start of a run's job here, by this host's own config."""
        self._run_start_handler = handler

    def _run_start_here(self, fields: dict) -> None:
        """Every worker of this host reads the request; the one that takes its claim starts the job, in a greenlet
        of its own (the reader must not wait for a spawn)."""
        reply_key = fields.get(b"reply", b"").decode()
        if self._run_start_handler is None or not reply_key:
            return
        try:
            if not self.client.delete(_input_claim(reply_key)):  # another worker took it, or the asker gave up
                return
            request = json.loads(fields[b"run_start"])
        except (redis.RedisError, ValueError) as exc:
            log.warning("could not take a run's start request: %s", exc)
            return
        gevent.spawn(self._start_and_answer, self._run_start_handler, request, reply_key)

    def _start_and_answer(self, handler: Callable[[dict[str, Any]], dict[str, Any]], request: dict[str, Any],
                          reply_key: str) -> None:
        try:
            answer = handler(request)
        except Exception as exc:  # never leave the coordinator waiting: a refusal says what went wrong
            log.exception("starting a run's job failed")
            answer = {"refused": f"the host could not start it: {exc}"}
        self._answer_input(reply_key, json.dumps(answer))

    def _drop_idle_mirrors(self) -> None:
        idle = MIRROR_IDLE + 2 * self.settings.heartbeat_interval
        while True:
            gevent.sleep(min(idle / 2, 10.0))
            now = time.monotonic()
            for key in [k for k, used in self._used.items() if now - used > idle]:
                job_id = key[len(JOB_PREFIX):] if key.startswith(JOB_PREFIX) else None
                if job_id in self._owned:
                    if job_id in self._running:
                        continue
                    del self._owned[job_id]
                self._drop_mirror(key)

    def pace(self, key: str, after: int, *, always: bool) -> Pacing | None:
        """A job run by another worker waits for every viewer here (pacing.py); one run here, for a run's."""
        if not key.startswith(JOB_PREFIX):
            return None
        job_id = key[len(JOB_PREFIX):]
        if job_id in self._owned:
            log_ = self._logs.get(key)
            if not always or log_ is None or log_.finished:
                return None
            self.writer.viewer_came(job_id)
            return log_.hold(after)
        return self.viewers.hold(key, after)

    def wait(self, key: str, after: Position | int, timeout: float, wake: Iterable[Event] = ()) -> bool:
        """Wait for an event after ``after`` in the key's local log (made by reading, if need be)."""
        epoch, offset = ("", after) if after.__class__ is int else after
        log_ = self._local(key, epoch, offset)
        if log_ is None:
            return True  # read from Redis first: that makes the mirror
        if epoch != log_.epoch and (epoch or offset):
            return True
        return log_.wait(offset, timeout, wake)

    def wait_any(self, afters: Mapping[str, Position | int], timeout: float, wake: Iterable[Event] = ()) -> bool:
        """Wait until any of the logs has something after its position; False on timeout."""
        changed = []
        for key, after in afters.items():
            epoch, offset = ("", after) if after.__class__ is int else after
            log_ = self._local(key, epoch, offset)
            if log_ is None or (epoch != log_.epoch and (epoch or offset)):
                return True
            if log_.last_id > offset or log_.finished:
                return True
            changed.append(log_.changed)
        return bool(gevent.wait([*changed, *wake], timeout=timeout, count=1))

    def set_listener(self, listener: LogListener) -> None:
        """Parked streams get every event of every local log: appended here, or read by the reader."""
        self._listener = listener
        for key, log_ in self._logs.items():
            if not (key.startswith(JOB_PREFIX) and key[len(JOB_PREFIX):] in self._owned):
                log_.deliver = listener.deliver

    # Channels.

    @_shared
    def ensure_channel(self, name: str, keep: Collection[str] = (), *, make_room: bool = True) -> None:
        """Make the channel if it does not exist (TooManyChannels at ``max_channels``: none is forgotten)."""
        check_channel_name(name)
        self._run_channel_script(name, ensure_only=True)

    @_shared
    def peek_channel(self, name: str) -> Position | None:
        """The channel's epoch and newest offset, or None if it does not exist."""
        epoch, last = self.client.hmget(_channel_meta(name), "epoch", "last")
        return None if epoch is None else Position(epoch.decode(), int(last or 0))

    @_shared
    def subscribe(self, name: str, user: str, *, pins: bool, keep: Collection[str] = ()) -> Subscription:
        """Count a subscriber of this worker until ``unsubscribe``, making the channel if need be."""
        self.ensure_channel(name, keep, make_room=pins)
        self._subscribers[name] = self._subscribers.get(name, 0) + 1
        self._by_user[user] = self._by_user.get(user, 0) + 1
        return Subscription(name, user, pins)

    def unsubscribe(self, subscription: Subscription) -> None:
        """A subscriber counted by ``subscribe`` has gone."""
        for counts, key in ((self._subscribers, subscription.name), (self._by_user, subscription.user)):
            left = counts.get(key, 0) - 1
            if left > 0:
                counts[key] = left
            else:
                counts.pop(key, None)

    def subscribers(self, name: str) -> int:
        """How many of this worker's streams are subscribed to a channel now."""
        return self._subscribers.get(name, 0)

    def subscriptions_of(self, user: str) -> int:
        """How many channel subscriptions the user's open streams hold in this worker."""
        return self._by_user.get(user, 0)

    @_shared
    def describe_channels(self) -> list[dict[str, Any]]:
        """Every channel by name (every host's), with this worker's subscriber counts and its newest event id."""
        for name in SYSTEM_CHANNELS:
            self._run_channel_script(name, ensure_only=True)
        names = sorted(name.decode() for name in self.client.smembers(f"{PREFIX}channels"))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(_channel_meta(name), "epoch", "last")
        described, gone = [], []
        for name, (epoch, last) in zip(names, pipe.execute(), strict=True):
            if epoch is None:
                gone.append(name)
                continue
            described.append({
                "name": name,
                "system": name in SYSTEM_CHANNELS,
                "subscribers": self._subscribers.get(name, 0),
                "last_id": Position(epoch.decode(), int(last or 0)).event_id,
                "url": f"/channels/{name}/events",
            })
        if gone:
            self.client.srem(f"{PREFIX}channels", *gone)
        return described

    # Limits shared by every worker and host.

    def rate_limiter(self, name: str, per_minute: int, burst: int) -> RateLimiter:
        """Buckets in Redis, shared by every worker and host (this worker's own while Redis is away)."""
        return SharedRateLimiter(self.client.register_script(TOKEN_BUCKET), f"{PREFIX}rate:{name}:", per_minute,
                                 burst)

    # Health.

    def status(self) -> dict[str, Any]:
        """``backend`` redis, ``host``, ``ok``; ``latency_ms`` of a PING now, or ``error`` (GET /healthz)."""
        answer: dict[str, Any] = {"backend": "redis", "host": self.host}
        began = time.perf_counter()
        try:
            self.client.ping()
        except redis.RedisError as exc:
            return {**answer, "ok": False, "error": str(exc) or exc.__class__.__name__}
        answer["latency_ms"] = round((time.perf_counter() - began) * 1000, 3)
        if not self.reader.healthy:
            return {**answer, "ok": False, "error": f"the stream reader is not connected: {self.reader.error}"}
        return {**answer, "ok": True, "pending_events": self.writer.pending()}

    # Memory.

    def buffered_bytes(self) -> tuple[int, int]:
        """(bytes this worker's local logs and mirrors hold, their limit)."""
        return self.budget.used, self.budget.limit


class SharedRateLimiter(RateLimiter):
    """``RateLimiter`` with its buckets in Redis (the TOKEN_BUCKET script); its own, local ones while Redis is
    away, so that limits still hold, per worker, rather than every request failing."""

    def __init__(self, script, prefix: str, per_minute: int, burst: int) -> None:
        super().__init__(per_minute, burst)
        self.script = script
        self.prefix = prefix
        self.idle_ttl = max(1, int(burst / self.rate) + 1) if self.rate > 0 else 1

    def acquire(self, key: str) -> float:
        """Take a token for ``key`` from the shared bucket: 0.0, or the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        try:
            return float(self.script(keys=[self.prefix + key], args=[self.rate, self.burst, self.idle_ttl]))
        except redis.RedisError:
            return super().acquire(key)


class OwnedJobLog(EventLog):
    """The log of a job run here: its runner also waits for Redis when Redis takes its output more slowly than
    the job writes it (JobWriter.behind), as for a slow owning viewer, never while Redis is away; and for its
    viewers on other workers (pacing.py)."""

    def __init__(self, writer: JobWriter, job_id: str, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(max_bytes, **kwargs)
        self._writer = writer
        self._job_id = job_id

    def owner_far_behind(self) -> bool:
        """The owning viewer, or Redis, is so far behind that the runner must wait before reading more."""
        return (super().owner_far_behind() or self._writer.behind(self._job_id)
                or self._viewers_behind(self._writer.window))

    def expect_viewer(self) -> None:
        """A run's job: wait for its stream from the start, here or on another worker (pacing.py)."""
        self._writer.expect_viewer(self._job_id)

    def _viewers_behind(self, limit: int) -> bool:
        slowest = self._writer.slowest_viewer(self._job_id)
        return slowest is not None and self.last_id - slowest > limit

    def wait_for_room(self, wake: Iterable[Event] = ()) -> None:
        """Block the runner while the owning viewer, Redis, or a viewer elsewhere is too far behind."""
        super().wait_for_room(wake)  # the owning viewer's part
        self._writer.wait_until_caught_up(self._job_id, wake)
        # Viewers elsewhere are looked at every POLL until the slowest is within half the window (or stalls).
        while self._viewers_behind(self._writer.window // 2):
            gevent.sleep(pacing.POLL)
            if any(event.is_set() for event in wake):
                return
            self._writer.refresh_viewers(self._job_id)
