"""The fleet client's pure parts (issue 20): targets, prefixes, whole lines per host, the table, the exit status;
and follow_run over a scripted transport, for the resume and cancel paths a real server cannot cut on cue."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cli import main
from app.client.api import Api
from app.client.commands import Session, follow_run, job_request, list_runs
from app.client.connection import Connection
from app.client.events import Event
from app.client.exitcodes import EXIT_CLIENT_ERROR
from app.client.fleet import (
    LineSplitter,
    RunWatch,
    describe_host_state,
    describe_run_end,
    format_hosts,
    format_lines,
    format_run_table,
    format_runs,
    host_prefix,
    hosts_column,
    parse_names,
    prefix_width,
    run_exit_status,
    run_request,
)
from app.client.interrupts import CtrlC
from app.client.output import Terminal, format_unix_time

# Targets and the request.


def test_names_split_at_commas_across_repeated_options():
    assert parse_names(["web-1,web-2", " db-1 ", "web-1", ",,"]) == ["web-1", "web-2", "db-1"]
    assert parse_names([]) == []


def test_run_request_is_the_job_body_plus_the_targets():
    job = job_request(["uptime"], None, 30.0)
    assert run_request(job, hosts=["a", "b"], tags=[], parallel=None, stop_on_failure=False) == {
        "argv": ["uptime"], "timeout": 30.0, "hosts": ["a", "b"],
    }
    assert run_request(job_request([], "deploy", None), hosts=[], tags=["web"], parallel=2, stop_on_failure=True) == {
        "action": "deploy", "params": {}, "tags": ["web"], "parallel": 2, "stop_on_failure": True,
    }


# Prefixes and whole lines.


def test_prefixes_are_padded_to_the_longest_host_name():
    width = prefix_width(["web-1", "db", "web-10"])
    assert width == 6
    assert host_prefix("db", width) == "db     | "
    assert host_prefix("web-10", width) == "web-10 | "
    assert prefix_width([]) == 0


def test_lines_are_cut_per_host_and_stream_and_an_unfinished_line_waits():
    splitter = LineSplitter()
    assert splitter.feed("a", "stdout", "one\ntw") == ["one\n"]
    assert splitter.feed("b", "stdout", "x") == []
    assert splitter.feed("a", "stderr", "err\n") == ["err\n"]  # a's stderr does not finish a's stdout line
    assert splitter.feed("b", "stdout", "y\n") == ["xy\n"]
    assert splitter.feed("a", "stdout", "o\r\nthree\rred\n") == ["two\r\n", "three\rred\n"]  # only \n ends a line
    assert splitter.feed("a", "stdout", "tail") == []
    assert splitter.hosts_pending() == ["a"]
    assert splitter.flush("a") == [("stdout", "tail")]
    assert splitter.flush("a") == [] and splitter.hosts_pending() == []


def test_a_line_that_never_ends_is_printed_once_it_is_long():
    splitter = LineSplitter(max_pending=10)
    assert splitter.feed("a", "stdout", "12345") == []
    assert splitter.feed("a", "stdout", "67890abc") == ["1234567890abc"]
    assert splitter.flush("a") == []


# Two hosts' text, each cut anywhere and interleaved anyhow.
_texts = st.text(alphabet="ab\n\r\u00e9", max_size=40)


@settings(max_examples=200, deadline=None)
@given(first=_texts, second=_texts, cuts=st.lists(st.integers(0, 40), max_size=8), order=st.randoms())
def test_printed_lines_never_mix_two_hosts_and_lose_nothing(first, second, cuts, order):
    def pieces(text: str) -> list[str]:
        points = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
        return [text[i:j] for i, j in itertools.pairwise(points)]

    queues = {"web-1": pieces(first), "db": pieces(second)}
    splitter = LineSplitter()
    printed: list[tuple[str, str]] = []
    while any(queues.values()):
        host = order.choice([name for name, queue in queues.items() if queue])
        printed += [(host, line) for line in splitter.feed(host, "stdout", queues[host].pop(0))]
    for host in ("web-1", "db"):
        printed += [(host, rest) for _, rest in splitter.flush(host)]
    for host, text in (("web-1", first), ("db", second)):
        mine = [line for name, line in printed if name == host]
        assert "".join(mine) == text  # each host's text, whole and in order
        assert all("\n" not in line[:-1] for line in mine)  # one line per printed line
        assert all(line.endswith("\n") for line in mine[:-1])


def test_lines_are_written_with_the_prefix_and_stderr_text_red():
    assert format_lines("db", 5, ["up 3 days\n", "no newline"]) == b"db    | up 3 days\ndb    | no newline\n"
    assert format_lines("web-1", 5, ["disk full\n", "\n"], red=True) == (
        b"web-1 | \x1b[31mdisk full\x1b[0m\nweb-1 | \n"  # the colour ends before the newline
    )
    assert format_lines("h", 1, ["caf\u00e9\n"]) == "h | caf\u00e9\n".encode()


# The end of a run.

_HOSTS = [
    {"host": "web-1", "job": "a" * 16, "state": "succeeded", "exit_code": 0, "reason": None},
    {"host": "web-10", "job": "b" * 16, "state": "failed", "exit_code": 3, "reason": None},
    {"host": "db", "job": None, "state": "refused", "exit_code": None, "reason": "command not allowed: uptime"},
]


def test_the_summary_table_names_each_host_state_and_exit():
    assert format_run_table(_HOSTS) == [
        "HOST    STATE      EXIT  REASON",
        "web-1   succeeded  0",
        "web-10  failed     3",
        "db      refused          command not allowed: uptime",
    ]
    assert format_run_table(_HOSTS[:2]) == ["HOST    STATE      EXIT", "web-1   succeeded  0", "web-10  failed     3"]
    # The job's own reason shows when it says more than the state and the code: not for a plain exit.
    ended = [{**_HOSTS[0], "reason": "exited"}, {**_HOSTS[1], "state": "failed", "exit_code": None,
                                                 "reason": "timeout"}]
    assert format_run_table(ended) == [
        "HOST    STATE      EXIT  REASON", "web-1   succeeded  0", "web-10  failed           timeout",
    ]
    assert format_run_table(ended[:1]) == ["HOST   STATE      EXIT", "web-1  succeeded  0"]


def test_exit_status_is_0_only_when_every_host_succeeded():
    done = {"id": "r1", "state": "succeeded", "hosts": [_HOSTS[0]]}
    assert run_exit_status(done) == 0
    assert run_exit_status({"id": "r1", "state": "partial", "failed_hosts": ["web-10", "db"], "hosts": _HOSTS}) == 1
    assert run_exit_status({"state": "failed", "hosts": [_HOSTS[1]]}) == 1
    assert run_exit_status({"state": "cancelled", "hosts": [{**_HOSTS[0], "state": "cancelled"}]}) == 1
    assert run_exit_status({"state": "succeeded", "hosts": []}) == 1  # nothing ran: not a success
    partial = {"id": "r1", "state": "partial", "failed_hosts": ["web-10", "db"], "hosts": _HOSTS}
    assert describe_run_end(partial) == "run r1 partial: 1 of 3 hosts succeeded; not: web-10, db"
    assert describe_run_end(done) == "run r1 succeeded: 1 of 1 hosts succeeded"


def test_host_states_in_one_line():
    assert describe_host_state(_HOSTS[2]) == "db: refused: command not allowed: uptime"
    assert describe_host_state(_HOSTS[1]) == f"web-10: failed (exit code 3), job {'b' * 16}"


def test_the_hosts_table():
    hosts = [
        {"name": "web-2", "tags": ["web", "eu"], "version": "1", "running_jobs": 2, "load": [0.5, 0.25, 1],
         "last_heartbeat": 990.4, "state": "up"},
        {"name": "db-1", "tags": [], "running_jobs": 0, "load": [], "last_heartbeat": 900.0, "state": "stale"},
    ]
    assert format_hosts(hosts, now=1000.0) == [
        "NAME   STATE  JOBS  LOAD            HEARTBEAT  TAGS",
        "db-1   stale  0                     100s ago",
        "web-2  up     2     0.50 0.25 1.00  10s ago    web,eu",
    ]


# The list of runs.


@pytest.fixture
def utc(monkeypatch):
    """Local time is UTC while the test runs."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


_RUNS = [
    {"id": "c" * 16, "state": "running", "failed_hosts": [], "user": "alice", "command": "sleep 60",
     "created_at": 1767225600.75, "ended_at": None, "parallel": 1, "stop_on_failure": False,
     "hosts": [{"host": "web-1", "state": "succeeded"}, {"host": "web-2", "state": "running"},
               {"host": "db", "state": "pending"}]},
    {"id": "b" * 16, "state": "partial", "failed_hosts": ["db"], "user": "bob", "command": "action deploy",
     "created_at": 1767225000, "ended_at": 1767225010.5, "parallel": None, "stop_on_failure": False,
     "hosts": [{"host": "web-1", "state": "succeeded"}, {"host": "db", "state": "failed"}]},
    {"id": "a" * 16, "state": "succeeded", "failed_hosts": [], "user": "alice", "command": "uptime",
     "created_at": 1767220000, "ended_at": 1767220001, "parallel": None, "stop_on_failure": False,
     "hosts": [{"host": "web-1", "state": "succeeded"}]},
]


def test_the_hosts_column_counts_the_hosts_that_succeeded():
    assert [hosts_column(run) for run in _RUNS] == ["1/3 ok", "1/2 ok", "1/1 ok"]
    assert hosts_column({"hosts": []}) == "0/0 ok"
    assert hosts_column({}) == "0/0 ok"


def test_unix_times_in_local_time_to_the_second(utc):
    assert format_unix_time(1767225600.75) == "2026-01-01 00:00:00"
    assert format_unix_time(0) == "1970-01-01 00:00:00"
    assert [format_unix_time(value) for value in (None, "2026-01-01", True)] == ["", "", ""]
    assert format_unix_time(1e300) == "1e+300"  # out of range: shown as it came, never a traceback


def test_the_runs_table_is_laid_out_as_the_jobs_table(utc):
    assert format_runs(_RUNS) == [
        "ID                STATE      HOSTS   USER   CREATED              COMMAND",
        "cccccccccccccccc  running    1/3 ok  alice  2026-01-01 00:00:00  sleep 60",
        "bbbbbbbbbbbbbbbb  partial    1/2 ok  bob    2025-12-31 23:50:00  action deploy",
        "aaaaaaaaaaaaaaaa  succeeded  1/1 ok  alice  2025-12-31 22:26:40  uptime",
    ]
    assert format_runs([]) == ["ID  STATE  HOSTS  USER  CREATED  COMMAND"]  # nothing yet: the header alone
    odd = format_runs([{"id": "r", "command": "echo 'a  b'"}])  # missing fields: empty cells
    assert odd[1] == "r" + " " * 10 + "0/0 ok" + " " * 17 + "echo 'a  b'"
    assert odd[0].index("COMMAND") == odd[1].index("echo")


class _Listing:
    """GET /runs answered with ``_RUNS`` (as many as ?limit= asks); what each request asked is kept."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path != "/runs":
            return httpx.Response(404, json={"error": "run_not_found", "message": "no such run"})
        limit = request.url.params.get("limit")
        return httpx.Response(200, json={"runs": _RUNS[: int(limit)] if limit else _RUNS})


def _listing_session(listing: _Listing, terminal: Terminal) -> Session:
    api = Api(Connection("http://fleet.test"))
    api.http = httpx.Client(base_url="http://fleet.test", transport=httpx.MockTransport(listing))
    return Session(api, terminal, CtrlC())


def test_list_runs_asks_for_the_limit_given_and_prints_the_table_or_json_lines(utc):
    listing = _Listing()
    terminal, out, err = _terminal()
    assert list_runs(_listing_session(listing, terminal), None, False) == 0
    assert out.getvalue().decode().splitlines() == format_runs(_RUNS) and err.getvalue() == b""
    assert "limit" not in listing.requests[-1].url.params  # the server's default
    terminal, out, err = _terminal()
    assert list_runs(_listing_session(listing, terminal), 2, True) == 0
    assert listing.requests[-1].url.params["limit"] == "2"
    assert [json.loads(line) for line in out.getvalue().decode().splitlines()] == _RUNS[:2]


# RunWatch: events to the terminal.


def _terminal(**options) -> tuple[Terminal, io.BytesIO, io.BytesIO]:
    out, err = io.BytesIO(), io.BytesIO()
    return Terminal(out, err, **options), out, err


def _out(host: str, text: str, stream: str = "stdout", job: str = "j") -> Event:
    return Event(stream, {"host": host, "job": job, "id": 1, "data": {"type": stream, "out": text}}, None)


def test_run_watch_prefixes_each_stream_and_finishes_lines_when_a_host_ends():
    terminal, out, err = _terminal()
    watch = RunWatch(["web-1", "db"], terminal)
    assert not watch.handle(_out("web-1", "load 0.1\npart"))
    assert not watch.handle(_out("db", "oops\n", "stderr"))
    assert not watch.handle(_out("db", "up"))
    assert not watch.handle(Event("exit", {"host": "web-1", "job": "j", "data": {"reason": "exited", "code": 0}}, "7"))
    assert not watch.handle(Event("host_state", _HOSTS[2] | {"host": "db"}, "8"))
    final = {"id": "r", "state": "partial", "hosts": _HOSTS}
    assert watch.handle(Event("run_exit", final, "9"))
    assert watch.final == final
    assert out.getvalue() == b"web-1 | load 0.1\nweb-1 | part\ndb    | up\n"
    assert err.getvalue() == (b"db    | oops\n"
                              b"sse-commander: db: refused: command not allowed: uptime\n")


def test_run_watch_reds_stderr_on_a_terminal_and_explains_abnormal_endings():
    terminal, out, err = _terminal(colour=True)
    watch = RunWatch(["a"], terminal)
    watch.handle(_out("a", "bad\n", "stderr"))
    watch.handle(Event("exit", {"host": "a", "job": "j1", "data": {"reason": "timeout", "signal": 15}}, "3"))
    assert err.getvalue() == b"a | \x1b[31mbad\x1b[0m\nsse-commander: a: job j1 timed out (killed by SIGTERM)\n"
    assert out.getvalue() == b""


def test_run_watch_tells_of_a_gap_and_with_verbose_of_starts_and_host_states():
    terminal, out, err = _terminal(verbose=True)
    watch = RunWatch(["web-1"], terminal)
    watch.handle(Event("host_state", {"host": "web-1", "state": "running", "job": "j"}, "R.r0"))
    watch.handle(Event("start", {"host": "web-1", "job": "j", "id": 1, "data": {"pid": 42, "argv": ["x"]}}, "R.r1"))
    watch.handle(Event("gap", {"host": "web-1", "job": "j", "missed_bytes": 4096}, None))
    assert err.getvalue().decode().splitlines() == [
        "sse-commander: web-1: running, job j",
        "sse-commander: web-1: job j started (pid 42)",
        "sse-commander: web-1: gap: 4096 bytes of output are missing here (the server's buffer had dropped them)",
    ]
    assert out.getvalue() == b""


# follow_run over a scripted server: what the client sends and prints across a cut and a 204.


def _frame(event: str, data: dict, event_id: str) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()


class _ScriptedRun:
    """A run's events, served from after the Last-Event-ID each request sends; the first answer is cut."""

    def __init__(self, events: list[tuple[str, dict]], cut_after: int | None, final: dict) -> None:
        self.frames = [(f"r-{n}", _frame(kind, data, f"r-{n}")) for n, (kind, data) in enumerate(events, 1)]
        self.cut_after = cut_after  # frames sent whole before the first connection breaks mid-frame
        self.final = final
        self.resumed_from: list[str | None] = []
        self.deleted = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            self.deleted += 1
            return httpx.Response(200, json=self.final)
        if not request.url.path.endswith("/events"):
            return httpx.Response(200, json=self.final)
        last = request.headers.get("Last-Event-ID")
        self.resumed_from.append(last)
        ids = [event_id for event_id, _ in self.frames]
        start = ids.index(last) + 1 if last else 0
        if start >= len(self.frames):
            return httpx.Response(204)
        frames = [frame for _, frame in self.frames[start:]]
        cut = self.cut_after if len(self.resumed_from) == 1 else None
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"},
                              content=self._body(frames, cut))

    @staticmethod
    def _body(frames: list[bytes], cut: int | None) -> Iterator[bytes]:
        yield b"retry: 10\n\n"
        for n, frame in enumerate(frames):
            if cut is not None and n == cut:
                yield frame[: len(frame) // 2]  # half an event, then the connection breaks
                raise httpx.ReadError("connection reset by peer")
            yield frame


def _session(script: _ScriptedRun, terminal: Terminal) -> Session:
    api = Api(Connection("http://fleet.test"))
    api.http = httpx.Client(base_url="http://fleet.test", transport=httpx.MockTransport(script))
    return Session(api, terminal, CtrlC())


def _run_events(final: dict) -> list[tuple[str, dict]]:
    def out(host: str, text: str, stream: str = "stdout") -> tuple[str, dict]:
        return stream, {"host": host, "job": host, "id": 2, "data": {"type": stream, "out": text}}

    return [
        ("host_state", {"host": "web-1", "state": "running", "job": "web-1"}),
        out("web-1", "one\ntw"), out("db", "alpha\n"), out("web-1", "o\n"), out("db", "beta", "stderr"),
        out("web-1", "three\n"),
        ("exit", {"host": "web-1", "job": "web-1", "data": {"reason": "exited", "code": 0}}),
        ("exit", {"host": "db", "job": "db", "data": {"reason": "exited", "code": 2}}),
        ("run_exit", final),
    ]


_FINAL = {"id": "r", "state": "partial", "failed_hosts": ["db"], "hosts": [
    {"host": "web-1", "state": "succeeded", "exit_code": 0, "reason": None},
    {"host": "db", "state": "failed", "exit_code": 2, "reason": None},
]}


def test_follow_run_resumes_after_a_cut_with_nothing_lost_or_doubled_and_exits_1_with_the_table():
    script = _ScriptedRun(_run_events(_FINAL), cut_after=3, final=_FINAL)
    terminal, out, err = _terminal()
    code = follow_run(_session(script, terminal), "r", ["web-1", "db"], reconnect_for=10, owned=True)
    assert code == 1
    assert script.resumed_from == [None, "r-3"]  # the last whole event before the cut
    assert out.getvalue() == b"web-1 | one\ndb    | alpha\nweb-1 | two\nweb-1 | three\n"
    assert err.getvalue() == (
        b"db    | beta\n"
        b"sse-commander: run r partial: 1 of 2 hosts succeeded; not: db\n"
        b"HOST   STATE      EXIT\nweb-1  succeeded  0\ndb     failed     2\n"
    )


def test_follow_run_after_the_final_event_asks_for_the_run_and_exits_0_when_all_succeeded():
    final = {"id": "r", "state": "succeeded", "failed_hosts": [], "hosts": [{"host": "a", "state": "succeeded",
                                                                               "exit_code": 0}]}
    script = _ScriptedRun([("run_exit", final)], cut_after=None, final=final)
    terminal, out, err = _terminal()
    session = _session(script, terminal)
    assert follow_run(session, "r", ["a"], reconnect_for=10, owned=False) == 0
    assert (out.getvalue(), err.getvalue()) == (b"", b"")  # success is silent without -v
    # Resumed after run_exit (a 204): the outcome comes from GET /runs/<id>.
    script.frames = script.frames[:0]
    assert follow_run(session, "r", ["a"], reconnect_for=10, owned=False) == 0


def _ctrl_c_at_chunk(script: _ScriptedRun, at: int) -> None:
    """A Ctrl-C (SIGINT to this process, as from the keyboard) as the ``at``-th chunk of the first follow is read."""
    body = script._body

    def interrupted(frames: list[bytes], cut: int | None) -> Iterator[bytes]:
        for n, chunk in enumerate(body(frames, cut)):
            if n == at and len(script.resumed_from) == 1:
                os.kill(os.getpid(), signal.SIGINT)
            yield chunk

    script._body = interrupted


def _follow_owned(session) -> int:
    """follow_run of run ``r`` on host ``a``, as ``run`` does (owned), with the CLI's Ctrl-C handler installed."""
    previous = signal.getsignal(signal.SIGINT)
    session.ctrl_c.install()
    try:
        return follow_run(session, "r", ["a"], reconnect_for=10, owned=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_cancels_the_run_on_every_host_and_follows_it_to_its_end():
    cancelled = {"id": "r", "state": "cancelled", "failed_hosts": ["a"], "hosts": [
        {"host": "a", "state": "cancelled", "exit_code": None, "reason": None}]}
    events = [("stdout", {"host": "a", "job": "j", "id": 2, "data": {"out": "working\n"}}),
              ("exit", {"host": "a", "job": "j", "data": {"reason": "cancelled", "signal": 15}}),
              ("run_exit", cancelled)]
    script = _ScriptedRun(events, cut_after=None, final=cancelled)
    _ctrl_c_at_chunk(script, 2)  # after the first output, in the first follow only
    terminal, out, err = _terminal()
    session = _session(script, terminal)
    code = _follow_owned(session)
    assert code == 1 and script.deleted == 1
    assert script.resumed_from == [None, "r-1"]
    assert out.getvalue() == b"a | working\n"  # once, though it was followed twice
    assert err.getvalue().decode().splitlines() == [
        "sse-commander: cancelling run r on every host (Ctrl-C again to detach)",
        "sse-commander: a: job j was cancelled (killed by SIGTERM)",
        "sse-commander: run r cancelled: 0 of 1 hosts succeeded; not: a",
        "HOST  STATE      EXIT", "a     cancelled",
    ]


def test_a_second_ctrl_c_while_the_run_is_cancelled_detaches_and_says_how_to_follow_it_again():
    final = {"id": "r", "state": "cancelled", "hosts": [{"host": "a", "state": "cancelled"}]}
    events = [("stdout", {"host": "a", "job": "j", "id": 2, "data": {"out": "working\n"}}), ("run_exit", final)]
    script = _ScriptedRun(events, cut_after=None, final=final)
    answer = script.__call__
    _ctrl_c_at_chunk(script, 2)

    def slow_delete(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":  # the server waits for the jobs' ends: Ctrl-C again meanwhile
            os.kill(os.getpid(), signal.SIGINT)
        return answer(request)

    terminal, out, err = _terminal()
    session = _session(script, terminal)
    session.api.http = httpx.Client(base_url="http://fleet.test", transport=httpx.MockTransport(slow_delete))
    code = _follow_owned(session)
    assert code == 130 and out.getvalue() == b"a | working\n"
    assert err.getvalue().decode().splitlines() == [
        "sse-commander: cancelling run r on every host (Ctrl-C again to detach)",
        "sse-commander: detached from run r, which keeps running; reattach with: sse-commander runs --follow r",
    ]


# The command line.


@pytest.mark.parametrize(("args", "why"), [
    (["--hosts", "a", "--tags", "web"], "give the targets with --hosts or with --tags, not both"),
    (["--parallel", "2"], "--parallel is for fleet runs"),
    (["--stop-on-failure"], "--stop-on-failure is for fleet runs"),
    (["--tags", "web", "--stdin"], "--stdin is not available for fleet runs"),
    (["--hosts", "a", "--yes"], "--yes confirms a named action"),
    (["--hosts", ","], "--hosts and --tags need at least one name"),
    (["--hosts", "a", "--parallel", "0"], "'--parallel': 0 is not in the range"),
])
def test_fleet_options_are_checked_before_anything_is_sent(capsys, args, why):
    # An address nothing listens on: a request would fail differently (cannot connect).
    assert main(["run", "--url", "http://127.0.0.1:9", *args, "--", "uptime"]) == EXIT_CLIENT_ERROR
    assert why in capsys.readouterr().err


@pytest.mark.parametrize(("args", "why"), [
    (["--follow"], "--follow needs the run's ID: sse-commander runs --follow ID"),
    (["--limit", "0"], "'--limit': 0 is not in the range 1<=x<=200"),
    (["--limit", "201"], "'--limit': 201 is not in the range 1<=x<=200"),
    (["r1", "--limit", "5"], "--limit is for listing runs: give no ID"),
    (["r1", "--json"], "--json is for listing runs: give no ID"),
    (["r1", "r2"], "unexpected extra argument (r2)"),
])
def test_runs_options_are_checked_before_anything_is_sent(capsys, args, why):
    assert main(["runs", "--url", "http://127.0.0.1:9", *args]) == EXIT_CLIENT_ERROR
    err = capsys.readouterr().err
    assert why in err and "Usage: sse-commander runs [OPTIONS] [ID]" in err
