"""Fleet runs (issue 20): one command on many hosts, every host's output on one screen.

Parsing and formatting are pure; RunWatch writes through a Terminal (output.py), nothing else.

The run's stream interleaves the hosts' events, and an event may end in the middle of a line. Lines are
printed whole, each with its host's prefix, so two hosts' bytes never share a printed line: each host's
stdout and stderr keep their own unfinished line until its newline (or the host's end) comes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .events import Event
from .exitcodes import outcome_of_exit, outcome_of_start_failure
from .output import RED, RESET, Terminal, encode_text, format_unix_time

# A host that writes without ever ending a line (a progress bar redrawn with \r) must not grow a buffer
# without bound, nor stay silent: past this many characters its unfinished line is printed as it stands.
MAX_PENDING_CHARS = 65536

SEPARATOR = " | "
EXIT_ALL_SUCCEEDED = 0
EXIT_SOME_FAILED = 1  # any host that did not succeed: failed, refused, unreachable, lost, cancelled, skipped

# Per-host states that mean the host is done with the run.
FINAL_HOST_STATES = frozenset({"succeeded", "failed", "refused", "unreachable", "lost", "cancelled", "skipped"})
# Per-host states worth a line on stderr the moment they happen: the host never ran, or ran away.
NOTEWORTHY_HOST_STATES = frozenset({"refused", "unreachable", "lost"})


def parse_names(values: Iterable[str]) -> list[str]:
    """``--hosts a,b --hosts c`` as ["a", "b", "c"]: commas split, blanks dropped, repeats dropped."""
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return names


def run_request(
    job_body: Mapping[str, Any], *, hosts: Sequence[str], tags: Sequence[str], parallel: int | None,
    stop_on_failure: bool,
) -> dict[str, Any]:
    """The POST /runs body: the POST /jobs body of the command (argv or action, timeout) plus the targets."""
    body: dict[str, Any] = dict(job_body)
    if hosts:
        body["hosts"] = list(hosts)
    else:
        body["tags"] = list(tags)
    if parallel is not None:
        body["parallel"] = parallel
    if stop_on_failure:
        body["stop_on_failure"] = True
    return body


def prefix_width(hosts: Iterable[str]) -> int:
    """The width every prefix is padded to: the longest host name."""
    return max((len(host) for host in hosts), default=0)


def host_prefix(host: str, width: int) -> str:
    """``web-1  | `` for a width of 6: the host name padded, so that every host's text starts in one column."""
    return host.ljust(width) + SEPARATOR


class LineSplitter:
    """Cuts each (host, stream)'s text into whole lines, keeping each one's unfinished line for later."""

    def __init__(self, max_pending: int = MAX_PENDING_CHARS) -> None:
        self.max_pending = max_pending
        self._pending: dict[tuple[str, str], str] = {}

    def feed(self, host: str, stream: str, text: str) -> list[str]:
        """The lines ``text`` completes for this host's stream, each with its newline."""
        key = (host, stream)
        # Only \n ends a line, as on a terminal: \r (a progress bar) stays inside its line.
        *whole, rest = (self._pending.pop(key, "") + text).split("\n")
        lines = [line + "\n" for line in whole]
        if len(rest) >= self.max_pending:
            lines.append(rest)
        elif rest:
            self._pending[key] = rest
        return lines

    def flush(self, host: str) -> list[tuple[str, str]]:
        """The host's unfinished lines, as (stream, text), stdout first: the host has ended."""
        found = []
        for stream in ("stdout", "stderr"):
            rest = self._pending.pop((host, stream), "")
            if rest:
                found.append((stream, rest))
        return found

    def hosts_pending(self) -> list[str]:
        """The hosts that still hold an unfinished line, in the order they first left one."""
        return list(dict.fromkeys(host for host, _ in self._pending))


def format_lines(host: str, width: int, lines: Iterable[str], *, red: bool = False) -> bytes:
    """Prefixed lines as the bytes to write; each ends with a newline (one is added to an unfinished line).

    With ``red`` the text (not the prefix) is red, and the colour ends before the newline, so that a line cut
    short never leaves the terminal red.
    """
    prefix = encode_text(host_prefix(host, width))
    out = []
    for line in lines:
        body = line[:-1] if line.endswith("\n") else line
        text = encode_text(body)
        out.append(prefix + (RED + text + RESET if red and text else text) + b"\n")
    return b"".join(out)


def event_text(data: Any) -> str:
    """The text of a run's ``stdout``/``stderr`` event: the job event's own data carries it as ``out``."""
    inner = data.get("data") if isinstance(data, dict) else None
    if isinstance(inner, dict):
        return str(inner.get("out", ""))
    return inner if isinstance(inner, str) else ""


def exit_column(host: Mapping[str, Any]) -> str:
    """A host's exit code, or empty when it has none (it never ran, or was lost)."""
    code = host.get("exit_code")
    return "" if code is None else str(code)


def host_reason(host: Mapping[str, Any]) -> str:
    """Why a host ended as it did, when that says more than its state and exit code (``exited`` does not)."""
    reason = host.get("reason")
    return "" if not reason or reason == "exited" else str(reason)


RUN_COLUMNS = ("HOST", "STATE", "EXIT")


def format_run_table(hosts: Sequence[Mapping[str, Any]]) -> list[str]:
    """The summary table of a run's hosts, in the run's order; a REASON column when any host has one."""
    with_reason = any(host_reason(host) for host in hosts)
    header = RUN_COLUMNS + (("REASON",) if with_reason else ())
    rows = [header] + [
        (str(host.get("host", "")), str(host.get("state", "")), exit_column(host))
        + ((host_reason(host),) if with_reason else ())
        for host in hosts
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def run_succeeded(run: Mapping[str, Any]) -> bool:
    """Whether every host of a finished run succeeded (and there was at least one)."""
    hosts = run.get("hosts") or []
    return run.get("state") == "succeeded" and bool(hosts) and all(h.get("state") == "succeeded" for h in hosts)


def run_exit_status(run: Mapping[str, Any]) -> int:
    """The client's exit status for a finished run: 0 only if every host succeeded, else 1."""
    return EXIT_ALL_SUCCEEDED if run_succeeded(run) else EXIT_SOME_FAILED


def describe_run_end(run: Mapping[str, Any]) -> str:
    """One line on how a run ended: its aggregate state, and which hosts did not succeed."""
    hosts = run.get("hosts") or []
    failed = run.get("failed_hosts")
    if not isinstance(failed, list):
        failed = [h.get("host") for h in hosts if h.get("state") != "succeeded"]
    text = f"run {run.get('id')} {run.get('state')}: {len(hosts) - len(failed)} of {len(hosts)} hosts succeeded"
    return text + (f"; not: {', '.join(str(name) for name in failed)}" if failed else "")


def describe_host_state(host: Mapping[str, Any]) -> str:
    """One line for a ``host_state`` event: ``web-2: refused: command not allowed``."""
    text = f"{host.get('host')}: {host.get('state')}"
    if host.get("exit_code") is not None:
        text += f" (exit code {host['exit_code']})"
    if host.get("job"):
        text += f", job {host['job']}"
    if host_reason(host):
        text += f": {host_reason(host)}"
    return text


HOST_COLUMNS = ("NAME", "STATE", "JOBS", "LOAD", "HEARTBEAT", "TAGS")


def format_hosts(hosts: Sequence[Mapping[str, Any]], now: float) -> list[str]:
    """The ``hosts`` table, sorted by name; HEARTBEAT is how long ago the last one came (``now`` in unix s)."""
    rows = [HOST_COLUMNS]
    for host in sorted(hosts, key=lambda h: str(h.get("name", ""))):
        load = host.get("load") or []
        beat = host.get("last_heartbeat")
        rows.append((
            str(host.get("name", "")),
            str(host.get("state", "")),
            str(host.get("running_jobs", "")),
            " ".join(f"{value:.2f}" for value in load if isinstance(value, (int, float))),
            f"{max(now - beat, 0):.0f}s ago" if isinstance(beat, (int, float)) else "",
            ",".join(str(tag) for tag in host.get("tags") or ()),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HOST_COLUMNS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def hosts_column(run: Mapping[str, Any]) -> str:
    """How many of a run's hosts succeeded, of how many: ``2/3 ok``."""
    hosts = run.get("hosts") or []
    good = sum(1 for host in hosts if isinstance(host, Mapping) and host.get("state") == "succeeded")
    return f"{good}/{len(hosts)} ok"


RUNS_COLUMNS = ("ID", "STATE", "HOSTS", "USER", "CREATED", "COMMAND")


def format_runs(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ``runs`` table, one line per run in the order given (the server's: newest first), laid out as
    ``jobs`` lays out its own: the command last, as long as it is."""
    rows = [RUNS_COLUMNS] + [
        (
            str(run.get("id", "")),
            str(run.get("state", "")),
            hosts_column(run),
            str(run.get("user") or ""),
            format_unix_time(run.get("created_at")),
            str(run.get("command") or ""),
        )
        for run in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(RUNS_COLUMNS) - 1)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
            for row in rows]


class RunWatch:
    """Writes a run's events as prefixed lines (stdout to stdout, stderr to stderr), and keeps how it ended."""

    def __init__(self, hosts: Sequence[str], terminal: Terminal) -> None:
        self.width = prefix_width(hosts)
        self.terminal = terminal
        self.splitter = LineSplitter()
        self.final: dict[str, Any] | None = None  # the run_exit event's data: the whole run

    def handle(self, event: Event) -> bool:
        """Write one event; True once the run's final event (``run_exit``) has come."""
        data = event.data if isinstance(event.data, dict) else {}
        host = str(data.get("host") or "")
        inner = data.get("data") if isinstance(data.get("data"), dict) else {}
        if event.type in ("stdout", "stderr"):
            self._write(host, event.type, self.splitter.feed(host, event.type, event_text(data)))
        elif event.type in ("exit", "err"):
            self.flush(host)  # the host's job has ended: its unfinished lines will not be finished
            job = str(data.get("job") or "")
            outcome = outcome_of_exit(inner, job) if event.type == "exit" else outcome_of_start_failure(inner, job)
            if outcome.message:
                self.terminal.note(f"{host}: {outcome.message}")
            else:
                self.terminal.status(f"{host}: {outcome.summary}")
        elif event.type == "host_state":
            if data.get("state") in FINAL_HOST_STATES:
                self.flush(host)
            if data.get("state") in NOTEWORTHY_HOST_STATES:
                self.terminal.note(describe_host_state(data))
            else:
                self.terminal.status(describe_host_state(data))
        elif event.type == "start":
            self.terminal.status(f"{host}: job {data.get('job')} started (pid {inner.get('pid')})")
        elif event.type == "gap":
            missed = data.get("missed_bytes", inner.get("missed_bytes"))
            self.terminal.note(f"{host}: gap: {missed} bytes of output are missing here "
                               "(the server's buffer had dropped them)")
        elif event.type == "run_exit":
            self.flush_all()
            self.final = data
            return True
        return False

    def flush(self, host: str) -> None:
        """Write a host's unfinished lines, each ended with a newline."""
        for stream, rest in self.splitter.flush(host):
            self._write(host, stream, [rest])

    def flush_all(self) -> None:
        """Write every host's unfinished lines: the run has ended."""
        for host in self.splitter.hosts_pending():
            self.flush(host)

    def _write(self, host: str, stream: str, lines: list[str]) -> None:
        if lines:
            red = stream == "stderr" and self.terminal.colour
            self.terminal.lines(stream, format_lines(host, self.width, lines, red=red))
