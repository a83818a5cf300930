"""The store interface: jobs, their event logs and channels, behind one abstract class.

Centrifugo's engines are the model: publish (``append``), read after a
position, wait, with trimming as the store's own policy; every log has an
epoch and offsets. ``MemoryStore`` (memory.py) keeps everything in this
worker; a Redis Streams store and a history store on disk implement the same
class. Nothing outside ``app.store`` knows which store it has.

Logs are addressed by key: ``job:<id>`` or ``channel:<name>`` (the keys
``GET /events`` uses). A position in a log is ``Position(epoch, offset)``:

- **Offsets** are the event ids within an epoch. A job's count output bytes
  plus one per other event; a channel's count messages. They start at 1 and
  only grow: the distance between two offsets is what lies between them.
- **Epochs** say which history an offset belongs to. A job's is ``""``: job
  ids are never reused, so a job needs none. A channel's is a short random
  token (``new_epoch``) made when its history starts: for the memory store,
  when the channel is made (at server start for the system channels). A
  channel forgotten while someone still reads it keeps its epoch; one made
  anew gets a new one.
- **Event ids on the wire**: ``str(offset)`` for a job, ``<epoch>-<offset>``
  for a channel (``Position.event_id``); ``parse_position`` reads them back.

Reading after a position of another epoch (or after a bare number, for a
channel) is not an error: the read says ``reset`` and returns the channel's
retained history from its start. Reading after a position older than what is
retained says how much was ``missed`` (a gap). Both are the stream's to tell
the client.

Live delivery: the streaming layer registers one ``LogListener`` per worker
(``set_listener``). The store calls ``deliver(key, event)`` for every event
appended to any log, once it is readable, and ``reset(key)`` when a log's
epoch changes under its readers (a Redis stream found missing); the memory
store calls them from ``append``, a Redis store from its per-worker reader.

Flow control of ``GET /run``'s owning viewer is a property of a job running
in this worker: ``local_log(job_id)`` gives the process layer a ``JobLog`` to
append to and to wait on; views and streams never touch it. Other viewers a
job waits for (``pace``: a run's streams, and viewers on other workers) report
their progress through a ``Pacing``, wherever the job runs.
"""

from __future__ import annotations

import abc
import re
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from gevent.event import Event

from ..policy.ratelimit import RateLimiter
from .query import JobPage, JobQuery, page_jobs

if TYPE_CHECKING:
    from .jobs import Job

JOB_PREFIX = "job:"
CHANNEL_PREFIX = "channel:"
TERMINAL_EVENTS = frozenset({"exit", "err"})  # a job's log ends with one of these; a channel never ends
# Seconds a paced viewer (Store.pace) may go without reading before its job stops waiting for it: no viewer can
# hold a job for longer than that without reading.
VIEWER_STALL = 5.0

_EPOCH_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_EPOCH_LENGTH = 6
_EVENT_ID = re.compile(r"(?:([0-9a-z]{1,32})-)?([0-9]{1,19})", re.ASCII)


def job_key(job_id: str) -> str:
    """The log key of a job."""
    return JOB_PREFIX + job_id


def channel_key(name: str) -> str:
    """The log key of a channel."""
    return CHANNEL_PREFIX + name


def is_job_key(key: str) -> bool:
    """Whether ``key`` names a job's log (which ends) rather than a channel's (which never does)."""
    return key.startswith(JOB_PREFIX)


def new_epoch() -> str:
    """A short random epoch token: 6 characters of [0-9a-z] (about 2 billion values)."""
    return "".join(secrets.choice(_EPOCH_ALPHABET) for _ in range(_EPOCH_LENGTH))


class Position(NamedTuple):
    """A place in a log: an offset (event id) within an epoch."""

    epoch: str
    offset: int

    @property
    def event_id(self) -> str:
        """The id as clients see it: ``<offset>`` without an epoch, else ``<epoch>-<offset>``."""
        return f"{self.epoch}-{self.offset}" if self.epoch else str(self.offset)


START = Position("", 0)  # before the first event of any log, in any epoch: from the start, never a reset


def parse_position(text: str) -> Position:
    """``<n>`` or ``<epoch>-<n>`` (epoch: 1-32 of [0-9a-z]; n: at most 19 digits); ValueError otherwise. Pure."""
    match = _EVENT_ID.fullmatch(text)
    if match is None:
        raise ValueError(f"not an event id: {text!r}")
    return Position(match[1] or "", int(match[2]))


class LogEvent(NamedTuple):
    """One stored event: its encoded SSE frame, and where in the frame its JSON data is.

    A tuple: one is made per line of output, and must stay cheap. The frame is
    encoded once, when appended, and the same bytes go to every viewer;
    ``data`` is the frame's JSON payload, ``frame[data_start:-2]``, which
    multiplexing wraps without parsing the frame again.
    """

    id: int  # the offset
    kind: str  # the SSE event type
    frame: bytes  # "id: ...\nevent: <kind>\ndata: <JSON>\n\n"
    data_start: int  # where the JSON begins in ``frame``
    raw: bytes = b""  # the output bytes this event carries, exactly as the command wrote them
    audience: str | None = None  # whose event this is, for logs that not everyone may read in full
    ascii_out: bool = False  # output known to be ASCII (so ``raw`` is exactly the frame's "out" text)

    @property
    def data(self) -> bytes:
        """The event's JSON payload, as encoded in its frame."""
        return self.frame[self.data_start : -2]


@dataclass(slots=True, frozen=True)
class LogRead:
    """The answer to "what came after this position"."""

    events: list[LogEvent]
    missed: int  # what the log no longer holds after the position: output bytes of a job, messages of a channel
    finished: bool  # the log holds its terminal event and nothing after the position remains
    last_id: int  # the newest offset in the log's current epoch (0: none yet)
    gap_at: int = 0  # where in ``events`` the missed part lay: after a job's pinned start event, else first
    epoch: str = ""  # the log's current epoch; every offset above belongs to it
    reset: bool = False  # the position was of another epoch: ``events`` start at the retained history's start


class UnknownLog(KeyError):
    """No log with that key is kept (a job never created or forgotten, a channel forgotten)."""


class StoreUnavailable(Exception):
    """The shared store cannot be reached now (Redis down or restarting): a request gets a 503 and may be
    retried; an open stream ends with ``retry:`` and resumes once the store is back."""


@dataclass(frozen=True)
class InputReply:
    """What the worker running a job did with input sent to it (``Store.request_input``): ``written`` bytes of it
    went into the job's stdin (or it was closed), unless ``refused`` says why not (``no_stdin``, ``input_closed``,
    ``job_not_running``, with ``message`` for the client)."""

    written: int = 0
    refused: str | None = None
    message: str = ""


class NoAnswer(StoreUnavailable):
    """The worker running a job did not answer a request routed to it in time (it may be stuck, or its host
    going away): a 503 as for an unreachable store, that may be retried."""


class TooManyJobs(Exception):
    """The limit of concurrently running jobs is reached (``per_owner``: the owner's own share of it)."""

    def __init__(self, per_owner: bool = False) -> None:
        super().__init__("the owner's share of running jobs is taken" if per_owner else "too many running jobs")
        self.per_owner = per_owner


class TooManyChannels(Exception):
    """The limit of channels is reached, and none can be forgotten to make room."""


@dataclass(frozen=True, eq=False, slots=True)
class Subscription:
    """One stream's subscription to one channel, until ``Store.unsubscribe``."""

    name: str
    user: str
    pins: bool  # whether it keeps the channel from being forgotten (only those who may publish to it)
    handle: object = None  # the store's own (the memory store keeps the channel's log alive through it)


class LogListener(Protocol):
    """What the store tells the streaming layer (one listener per worker)."""

    def deliver(self, key: str, event: LogEvent) -> None:
        """``event`` was appended to the log ``key`` and can be read."""

    def reset(self, key: str) -> None:
        """The log ``key`` has a new epoch: its readers must read again (and will be told ``reset``)."""


class JobLog(abc.ABC):
    """The log of a job running in this worker, as the process layer sees it: appends and flow control.

    Flow control is for ``GET /run``: its viewer owns the job, and the runner
    waits for it rather than dropping output it has not read (a command that
    outpaces its terminal waits too). Detached jobs never wait.
    """

    @abc.abstractmethod
    def append(self, kind: str, payload: Any, raw: bytes = b"", *, ascii_out: bool = False) -> LogEvent:
        """Append an event (``raw``: the output bytes it carries; ``ascii_out``: they are ASCII, and exactly the
        payload's text); it is delivered and readable at once."""

    @abc.abstractmethod
    def claim_owner(self) -> None:
        """From now on the runner waits for the owning viewer rather than drop what it has not read."""

    @abc.abstractmethod
    def release_owner(self) -> None:
        """The owner is gone: never hold the runner back again."""

    @abc.abstractmethod
    def owner_read_through(self, offset: int) -> None:
        """The owner has sent everything through ``offset``."""

    @abc.abstractmethod
    def owner_far_behind(self) -> bool:
        """Whether the runner must wait for the owner before reading more output."""

    @abc.abstractmethod
    def wait_for_room(self, wake: Iterable[Event] = ()) -> None:
        """Block while the owner is far behind, or until one of ``wake`` is set."""

    @abc.abstractmethod
    def expect_viewer(self) -> None:
        """A run's job: until its run's stream comes to pace it (``Store.pace``), wait for it as for one that
        has read nothing, for at most VIEWER_STALL seconds (its stream learns of the job only once started)."""


class Pacing(abc.ABC):
    """A viewer a job's output waits for: the job's runner keeps no more than a window of output ahead of it.

    What ``Store.pace`` gives a stream to report its progress to; closed when the stream ends.
    """

    @abc.abstractmethod
    def read_through(self, offset: int) -> None:
        """The viewer has sent everything through ``offset`` to its client."""

    @abc.abstractmethod
    def close(self) -> None:
        """The viewer is gone: never hold the job back for it again."""


class Store(abc.ABC):
    """Jobs, their event logs and channels: everything the service keeps."""

    # The job registry.

    @abc.abstractmethod
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
        """Register a new running job and its log, or raise TooManyJobs.

        ``owner_limit``: how many running jobs the owner may have (None: no share of their own).
        ``request_id``: the id of the request that started it (X-Request-ID), kept in its record.
        ``stderr``: the job's ``stderr`` mode (``separate`` or ``merged``), kept in its metadata.
        ``stdin``: whether the job's stdin is a pipe that takes input (``POST /jobs/<id>/input``), kept likewise.
        """

    @abc.abstractmethod
    def get_job(self, job_id: str) -> Job | None:
        """A job by id, or None (never existed, or forgotten)."""

    @abc.abstractmethod
    def list_jobs(self, *, state: str | None = None, owner: str | None = None) -> list[Job]:
        """Kept jobs, newest first; only those in ``state``, or of ``owner``, if given."""

    def find_jobs(self, query: JobQuery) -> JobPage:
        """One page of kept jobs for GET /jobs (filters, cursor, counts by state; see query.py).

        Concrete: a pure function over ``list_jobs()``. A store with an index answers it itself (the history
        store does, in SQL); the answer must be the same.
        """
        return page_jobs(self.list_jobs(), query)

    @abc.abstractmethod
    def mark_started(self, job_id: str, pid: int) -> None:
        """The job's command has started as ``pid``."""

    @abc.abstractmethod
    def mark_stopping(self, job_id: str) -> None:
        """A running job has been told to end."""

    @abc.abstractmethod
    def finish_job(self, job_id: str, **fields: Any) -> Job:
        """Record how a job ended (its final ``state``, ``reason``, exit code, usage...); a second call changes
        only the fields it names."""

    @abc.abstractmethod
    def running_count(self) -> int:
        """How many jobs are running now (``max_running_jobs`` counts these)."""

    @abc.abstractmethod
    def running_count_of(self, owner: str) -> int:
        """How many jobs ``owner`` has running now (``max_running_jobs_per_user``)."""

    @abc.abstractmethod
    def local_log(self, job_id: str) -> JobLog:
        """The log of a job running in this worker, for its runner (UnknownLog if there is none)."""

    def pace(self, key: str, after: int, *, always: bool) -> Pacing | None:
        """Make the job ``key`` wait for a viewer that has sent through ``after``, or None where it does not.

        A viewer reading a job run by another worker (through a shared store) always paces it: output that
        crosses workers is never dropped while its viewers keep reading. One in this worker paces it only if
        ``always`` (a run's stream, which, like GET /run, stands in for a terminal); otherwise it is fed as the
        output is read, and falls behind only by being slow itself. Concrete: a store with neither, None.
        """
        return None

    # Jobs that run in other workers (a shared store; issue 16).

    @abc.abstractmethod
    def request_stop(self, job_id: str, reason: str) -> bool:
        """Ask the worker that runs ``job_id`` (another worker of this host or of another) to stop it for
        ``reason`` (``cancelled``); False if no other worker runs it (the memory store: every job runs here)."""

    @abc.abstractmethod
    def set_stop_handler(self, handler: Callable[[str, str], object]) -> None:
        """What ``request_stop`` from another worker calls here for a job of this worker: the runner's
        ``stop(job_id, reason)``."""

    @abc.abstractmethod
    def request_input(self, job_id: str, data: bytes | None, timeout: float) -> InputReply | None:
        """Have the worker that runs ``job_id`` (another worker of this host or of another) write ``data`` to its
        stdin without waiting, or close it (``data`` None), and return what it did; None if no other worker
        runs it (the memory store: every job runs here). NoAnswer if no answer came within ``timeout``."""

    @abc.abstractmethod
    def set_input_handler(self, handler: Callable[[str, bytes | None], InputReply]) -> None:
        """What ``request_input`` from another worker calls here for a job of this worker: the service's
        non-blocking write to (or close of) the job's stdin."""

    # Event logs, by key.

    @abc.abstractmethod
    def append(self, key: str, kind: str, payload: Any, raw: bytes = b"", audience: str | None = None) -> LogEvent:
        """Append an event to a log, encoded once; a channel's log is made if need be (TooManyChannels).

        UnknownLog for a job that is not kept; RuntimeError after a job's terminal event.
        """

    @abc.abstractmethod
    def read(self, key: str, after: Position | int, limit: int = 512, *, raw: bool = True) -> LogRead:
        """Up to ``limit`` events after ``after`` (an int: a position without an epoch); UnknownLog if not kept.

        ``raw=False``: the caller reads frames only, so a store may leave the events' ``raw`` empty (the history
        on disk then neither decodes nor copies output bytes).
        """

    @abc.abstractmethod
    def wait(self, key: str, after: Position | int, timeout: float, wake: Iterable[Event] = ()) -> bool:
        """Wait until the log has something after ``after`` (or has ended, or its epoch changed), one of ``wake``
        is set, or ``timeout``; False on timeout."""

    @abc.abstractmethod
    def wait_any(self, afters: Mapping[str, Position | int], timeout: float, wake: Iterable[Event] = ()) -> bool:
        """``wait`` on several logs at once: until any of them has something after its position."""

    @abc.abstractmethod
    def set_listener(self, listener: LogListener) -> None:
        """The one listener live delivery gets every appended event from (see the module docstring)."""

    # Channels.

    @abc.abstractmethod
    def ensure_channel(self, name: str, keep: Collection[str] = (), *, make_room: bool = True) -> None:
        """Make the channel if it does not exist, forgetting an idle one to make room if need be.

        Never forgets a channel named in ``keep``; with ``make_room`` false (a caller who may not
        publish to it), none at all. TooManyChannels when there is no room.
        """

    @abc.abstractmethod
    def peek_channel(self, name: str) -> Position | None:
        """The channel's newest position (its epoch, its last offset), or None if it does not exist."""

    @abc.abstractmethod
    def subscribe(self, name: str, user: str, *, pins: bool, keep: Collection[str] = ()) -> Subscription:
        """Count a subscriber until ``unsubscribe``, making the channel if need be (as ``ensure_channel``)."""

    @abc.abstractmethod
    def unsubscribe(self, subscription: Subscription) -> None:
        """A subscriber counted by ``subscribe`` has gone."""

    @abc.abstractmethod
    def subscribers(self, name: str) -> int:
        """How many streams are subscribed to a channel now."""

    @abc.abstractmethod
    def subscriptions_of(self, user: str) -> int:
        """How many channel subscriptions ``user``'s open streams hold."""

    @abc.abstractmethod
    def describe_channels(self) -> list[dict[str, Any]]:
        """Every channel by name: ``name``, ``system``, ``subscribers``, ``last_id`` (its newest event id), ``url``."""

    # Limits shared by whoever shares the store (issue 16).

    @abc.abstractmethod
    def rate_limiter(self, name: str, per_minute: int, burst: int) -> RateLimiter:
        """A token bucket per key (``acquire(key)``: 0, or the seconds to wait) for ``name`` (jobs, publish,
        login): this worker's own with the memory store, every worker's and host's with a shared one."""

    # Health.

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """The backend and whether it answers now, for GET /healthz: ``backend``, ``ok``, and for a shared
        store ``latency_ms`` (a round trip now) or ``error`` (why it cannot be reached)."""

    # Memory.

    @abc.abstractmethod
    def buffered_bytes(self) -> tuple[int, int]:
        """(bytes held for replay in this worker, the most it may hold): GET /healthz shows both."""

    # Health and shutdown (issue 17). Concrete defaults: a store with nothing to report or write out inherits them.

    def health_problem(self) -> str | None:
        """Why the store is degraded but still serving (GET /healthz says ``degraded`` and this), or None."""
        return None

    def close(self, timeout: float) -> bool:
        """Graceful shutdown, after the jobs have ended: write out what is pending, within ``timeout`` seconds;
        whether everything was."""
        return True



    # Fleets (issue 20): hosts, runs' records, and a run's jobs started on their hosts. A store that no other
    # host shares knows this host only and keeps runs in this worker (memory.py); Redis shares them all.

    @abc.abstractmethod
    def list_hosts(self) -> list[dict[str, Any]] | None:
        """Every registered host (``name``, ``tags``, ``version``, ``running_jobs``, ``load``, ``last_heartbeat``),
        or None when the store is this host's alone (the caller describes this host itself)."""

    @abc.abstractmethod
    def save_run(self, run_id: str, record: dict[str, Any], ttl: float) -> None:
        """Keep a run's record (``ttl``: seconds a shared store keeps it after the last save)."""

    @abc.abstractmethod
    def load_run(self, run_id: str) -> dict[str, Any] | None:
        """A run's record, or None if unknown (or forgotten)."""

    @abc.abstractmethod
    def list_runs(self, limit: int, user: str | None = None) -> list[dict[str, Any]]:
        """The newest kept runs' records (by ``created_at``), at most ``limit``, newest first; only ``user``'s if
        given. A store lists its newest ``MAX_RUNS`` (store/runs.py) at most."""

    @abc.abstractmethod
    def run_changed(self, run_id: str) -> Event:
        """An event set when the run's record is next saved, by any worker or host sharing the store (take it
        before ``load_run``: a save after that sets it). It may be set without a change, never left unset
        after one (bar a store outage: a follower still looks again now and then)."""

    @abc.abstractmethod
    def job_ended(self, job_id: str) -> Event:
        """An event set when a run's job (origin ``runs``) ends, wherever it ran, for its coordinator (take it
        before ``get_job``: an end after that sets it). It may be set without an end, and for other jobs too. A
        job a liveness sweep marks ``lost`` may not set it: a waiter still looks again now and then."""

    @abc.abstractmethod
    def request_run_cancel(self, run_id: str) -> None:
        """Ask a run's coordinator to start no more hosts and to cancel its jobs (seen on its next turn)."""

    @abc.abstractmethod
    def run_cancel_requested(self, run_id: str) -> bool:
        """Whether ``request_run_cancel`` was called for the run."""

    @abc.abstractmethod
    def start_on_host(self, host: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Ask ``host`` to start a run's job (it decides by its own config): ``{"job": id}``, ``{"refused": why}``
        or ``{"unreachable": why}`` when no worker of it took the request within ``timeout``."""

    @abc.abstractmethod
    def set_run_start_handler(self, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """What a request to start a run's job on this host calls (``start_on_host`` of another host)."""

    @abc.abstractmethod
    def claim_run_start(self, run_id: str, host: str) -> dict[str, Any] | None:
        """None: the caller starts ``host``'s job of the run (and records the answer); else the answer of the one
        start there was (``{"job": id}`` or ``{"refused": why}``): a run's job starts at most once per host."""

    @abc.abstractmethod
    def record_run_start(self, run_id: str, host: str, answer: dict[str, Any] | None) -> None:
        """The answer of the start that ``claim_run_start`` let the caller make; None releases the claim (nothing
        started: a later request may start it)."""

    @abc.abstractmethod
    def run_taken_over(self, run_id: str, host: str, worker: int) -> bool:
        """Whether the run coordinated by ``host``'s ``worker`` was taken over by another (it seemed gone)."""

    @abc.abstractmethod
    def set_run_adopter(self, adopter: Callable[[dict[str, Any]], None]) -> None:
        """What a shared store calls with the record of a running run whose coordinating worker went away, once
        per such run, in one worker."""
