"""THE Prometheus instruments of SSE Commander, and one small function per thing that happens.

Code elsewhere never touches an instrument: it calls a function named after
the event (``job_started``, ``stream_opened``, ``observe_store_write``...),
once per job, stream, refusal or write, never once per output event, so the
hot paths stay as fast as they were.

Under gunicorn the master points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before forking (server/gunicorn_conf.py): each worker then writes
its values to files there, and a scrape of any worker adds up every worker of
this host (``exposition``). Gauges count live workers only (``livesum``): the
master's ``child_exit`` removes a dead worker's gauge files. Without that
variable (in-process tests, a bare ``flask run``) the values live in this
process only.

Label values come from fixed sets (job states and reasons, stream kinds,
error codes, store kinds), so the number of series stays bounded.
"""

from __future__ import annotations

import functools
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Every name here is a classic one, so the text is the 0.0.4 format that every Prometheus 2.x reads (Debian 12's
# included); prometheus_client's own default, 1.0.0, is only announced differently.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
STREAM_KINDS = ("run", "job", "channel", "events", "fleet")  # fleet: GET /runs/<id>/events

# Instruments are registered here (not in the default registry): in multiprocess mode a scrape builds its own
# registry over the files instead.
REGISTRY = CollectorRegistry(auto_describe=True)
_NS = "ssecmd"

JOBS_STARTED = Counter("jobs_started_total", "Jobs started, by where they came from (jobs: POST /jobs, run: GET /run)",
                       ["origin"], namespace=_NS, registry=REGISTRY)
JOBS_FINISHED = Counter("jobs_finished_total", "Jobs that reached a final state, by state and reason",
                        ["state", "reason"], namespace=_NS, registry=REGISTRY)
JOBS_RUNNING = Gauge("jobs_running", "Jobs running now (started and not yet in a final state)",
                     namespace=_NS, registry=REGISTRY, multiprocess_mode="livesum")
JOB_DURATION = Histogram(
    "job_duration_seconds", "How long finished jobs ran, from their start to their final state", ["state"],
    namespace=_NS, registry=REGISTRY,
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
SPAWN_LATENCY = Histogram(
    "job_spawn_latency_seconds", "From a job's creation to its command's exec", namespace=_NS, registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
OUTPUT_BYTES = Counter("job_output_bytes_total", "Output bytes written by finished jobs' commands",
                       namespace=_NS, registry=REGISTRY)
DROPPED_BYTES = Counter(
    "job_output_dropped_bytes_total", "Output bytes that finished jobs' buffers had dropped by their end",
    namespace=_NS, registry=REGISTRY,
)
GAP_BYTES = Counter("stream_gap_bytes_total", "Job output bytes that streams reported as missed (gap events)",
                    namespace=_NS, registry=REGISTRY)
STREAMS_OPEN = Gauge("streams_open", "Event streams open now, by kind (run, job, channel, events)", ["kind"],
                     namespace=_NS, registry=REGISTRY, multiprocess_mode="livesum")
for _kind in STREAM_KINDS:  # every kind is in the scrape from the start, at 0
    STREAMS_OPEN.labels(_kind)
SUBSCRIBERS = Gauge("channel_subscribers", "Channel subscriptions held by open streams (all channels together)",
                    namespace=_NS, registry=REGISTRY, multiprocess_mode="livesum")
MESSAGES_PUBLISHED = Counter("messages_published_total", "Messages published to channels (POST /channels/<name>)",
                             namespace=_NS, registry=REGISTRY)
SLOW_DROPS = Counter("slow_subscriber_drops_total",
                     "Streams dropped because their client stopped reading for send_timeout",
                     namespace=_NS, registry=REGISTRY)
AUTH_FAILURES = Counter("auth_failures_total", "Requests refused with 401 or 403, by status and error code",
                        ["status", "reason"], namespace=_NS, registry=REGISTRY)
REFUSALS = Counter("requests_refused_total", "Requests refused with 429 or 503, by status and error code",
                   ["status", "reason"], namespace=_NS, registry=REGISTRY)
RUNS = Counter("runs_total", "Runs started (POST /runs: one command on many hosts)", namespace=_NS, registry=REGISTRY)
RUN_HOSTS = Counter("run_hosts_total", "Hosts' parts of runs that ended, by outcome", ["outcome"],
                    namespace=_NS, registry=REGISTRY)
RUN_OUTCOMES = ("succeeded", "failed", "refused", "unreachable", "lost", "cancelled", "skipped")
for _outcome in RUN_OUTCOMES:  # every outcome is in the scrape from the start, at 0
    RUN_HOSTS.labels(_outcome)
STORE_WRITE = Histogram(
    "store_write_seconds", "How long a write to the job store (history on disk, Redis) took",
    namespace=_NS, registry=REGISTRY,
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)


# A labelled instrument's child per label values, looked up once (the values come from fixed sets).
_started_by = functools.cache(JOBS_STARTED.labels)
_finished_by = functools.cache(JOBS_FINISHED.labels)
_duration_by = functools.cache(JOB_DURATION.labels)
_streams_by = functools.cache(STREAMS_OPEN.labels)


# Jobs (the façade and the runner call these, once per job).


def job_started(origin: str) -> None:
    """A job was created and is about to start its command."""
    _started_by(origin).inc()
    JOBS_RUNNING.inc()


def job_finished(state: str, reason: str, duration: float | None, output_bytes: int, dropped_bytes: int) -> None:
    """A job reached its final state (once per job): its outcome, how long it ran and what it wrote."""
    _finished_by(state, reason).inc()
    JOBS_RUNNING.dec()
    if duration is not None:
        _duration_by(state).observe(duration)
    if output_bytes:
        OUTPUT_BYTES.inc(output_bytes)
    if dropped_bytes:
        DROPPED_BYTES.inc(dropped_bytes)


def observe_spawn(seconds: float) -> None:
    """A job's command was exec'd ``seconds`` after the job was created."""
    SPAWN_LATENCY.observe(seconds)


# Streams and channels.


def stream_opened(kind: str) -> None:
    """A stream of ``kind`` (one of STREAM_KINDS) was handed out."""
    _streams_by(kind).inc()


def stream_closed(kind: str) -> None:
    """A stream counted by ``stream_opened`` ended."""
    _streams_by(kind).dec()


def gap_reported(missed_bytes: int) -> None:
    """A stream told its client that ``missed_bytes`` of a job's output were no longer held."""
    GAP_BYTES.inc(missed_bytes)


def slow_subscriber_dropped() -> None:
    """A stream was dropped: its client stopped reading."""
    SLOW_DROPS.inc()


def subscribed(count: int = 1) -> None:
    """Streams took ``count`` channel subscriptions."""
    SUBSCRIBERS.inc(count)


def unsubscribed(count: int = 1) -> None:
    """Streams gave up ``count`` channel subscriptions."""
    SUBSCRIBERS.dec(count)


def message_published() -> None:
    """A message was published to a channel."""
    MESSAGES_PUBLISHED.inc()


# Refusals (the HTTP layer's after-request hook and admission).


def request_refused(status: int, reason: str) -> None:
    """A request was answered 401/403 (an auth failure) or 429/503 (a refusal), ``reason`` its error code."""
    if status in (401, 403):
        AUTH_FAILURES.labels(str(status), reason).inc()
    elif status in (429, 503):
        REFUSALS.labels(str(status), reason).inc()


# Runs (issue 20; the coordinator calls these, once per run and once per host of it).


def run_started() -> None:
    """A run was accepted."""
    RUNS.inc()


def run_host_finished(outcome: str) -> None:
    """One host's part of a run ended with ``outcome`` (one of RUN_OUTCOMES)."""
    RUN_HOSTS.labels(outcome).inc()


# Stores.


def observe_store_write(seconds: float) -> None:
    """The store (history on disk, Redis) took ``seconds`` to write something (one server runs one store)."""
    STORE_WRITE.observe(seconds)


# Exposition.


def multiprocess_dir() -> str | None:
    """The directory workers write their values to, when running under gunicorn's master."""
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> tuple[bytes, str]:
    """The scrape: every metric of this host's workers (or of this process), and its content type."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return generate_latest(registry), CONTENT_TYPE
