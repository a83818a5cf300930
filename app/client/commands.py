"""The client commands: run, attach, jobs, logs, cancel, tail, publish, actions, hosts, runs (click)."""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import click
import httpx

from .api import OUTPUT_TIMEOUT, Api, ClientError, Refused
from .connection import DEFAULT_URL, TOKEN_ENV, TOKEN_FILE_ENV, URL_ENV, ConnectionConfigError, resolve
from .events import DEFAULT_RECONNECT_FOR, Event, Follower
from .exitcodes import (
    EXIT_CLIENT_ERROR,
    EXIT_DETACHED,
    EXIT_SIGNAL_BASE,
    Outcome,
    outcome_of_exit,
    outcome_of_job,
    outcome_of_start_failure,
)
from .fleet import (
    RunWatch,
    describe_run_end,
    format_hosts,
    format_run_table,
    format_runs,
    parse_names,
    run_exit_status,
    run_request,
)
from .interrupts import CtrlC
from .output import PROG, Terminal, format_actions, format_jobs, format_message
from .stdin import InputForwarder

EXIT_BROKEN_PIPE = EXIT_SIGNAL_BASE + signal.SIGPIPE  # what a shell shows for `cmd | head`


class ClientCommand(click.Command):
    """A command that talks to a server: its usage errors exit 255, like its other failures (as ssh's do)."""


@dataclass
class Session:
    """What a client command works with."""

    api: Api
    terminal: Terminal
    ctrl_c: CtrlC


def _quiet_stdout() -> None:
    """After EPIPE on stdout: point it at /dev/null so the interpreter's final flush does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def client_command(**context_settings: Any) -> Callable[[Callable[..., int]], ClientCommand]:
    """A client command: --url, --token-file and -v, a Session, and every failure as one line on stderr."""
    return functools.partial(_client_command, context_settings={"help_option_names": ["-h", "--help"],
                                                                **context_settings})


def _client_command(func: Callable[..., int], context_settings: dict[str, Any]) -> ClientCommand:

    @click.option("--url", envvar=URL_ENV, default=DEFAULT_URL, show_default=True, show_envvar=True,
                  help="The server's address.")
    @click.option("--token-file", envvar=TOKEN_FILE_ENV, show_envvar=True, metavar="PATH",
                  help=f"Read the token from this file (mode 600). Default: the {TOKEN_ENV} variable.")
    @click.option("-v", "--verbose", is_flag=True, help="Status lines on stderr: start, reconnects, end.")
    @functools.wraps(func)
    def command(url: str, token_file: str | None, verbose: bool, **options: Any) -> int:
        terminal = Terminal.standard(verbose=verbose)
        ctrl_c = CtrlC()
        ctrl_c.install()
        api = None
        try:
            api = Api(resolve(url, token_file, os.environ), on_wait=terminal.note, checkpoint=ctrl_c.raise_pending)
            return func(Session(api, terminal, ctrl_c), **options)
        except ConnectionConfigError as exc:
            terminal.note(str(exc))
            return EXIT_CLIENT_ERROR
        except ClientError as exc:
            terminal.note(exc.message)
            return exc.exit_code
        except KeyboardInterrupt:
            return EXIT_DETACHED
        except BrokenPipeError:
            _quiet_stdout()
            return EXIT_BROKEN_PIPE
        except (click.ClickException, click.exceptions.Exit):
            raise
        except Exception as exc:  # a bug of ours: still one line, never a traceback
            terminal.note(f"unexpected error: {type(exc).__name__}: {exc}")
            return EXIT_CLIENT_ERROR
        finally:
            if api is not None:
                api.close()

    created = click.command(cls=ClientCommand, context_settings=context_settings)(command)
    # --help lists the command's own options first, then the shared ones.
    shared = {"url", "token_file", "verbose", "help"}
    created.params = [p for p in created.params if p.name not in shared] + [
        p for p in created.params if p.name in shared
    ]
    return created


reconnect_option = click.option(
    "--reconnect-timeout", type=click.FloatRange(min=0), default=DEFAULT_RECONNECT_FOR, show_default=True,
    metavar="SECONDS", help="Give up (exit 255) after this long without a working connection.",
)


# Jobs.

def job_request(
    words: Sequence[str], action: str | None, timeout: float | None, *, merge_stderr: bool = False,
    stdin: bool = False, confirm: bool = False,
) -> dict[str, Any]:
    """The POST /jobs body for ``run``: argv, or an action with KEY=VALUE parameters. Pure."""
    body: dict[str, Any]
    if action is not None:
        params = {}
        for word in words:
            key, sep, value = word.partition("=")
            if not sep or not key:
                raise click.UsageError(f"action parameters are KEY=VALUE, got {word!r}")
            params[key] = value
        body = {"action": action, "params": params}
    else:
        if not words:
            raise click.UsageError("give the command to run: sse-commander run -- CMD [ARGS]...")
        body = {"argv": list(words)}
    if timeout is not None:
        body["timeout"] = timeout
    if merge_stderr:
        body["stderr"] = "merged"
    if stdin:
        body["stdin"] = True
    if confirm:
        if action is None:
            raise click.UsageError("--yes confirms a named action: give it with --action NAME")
        body["confirm"] = True
    return body


stdin_option = click.option(
    "--stdin", "forward_stdin", is_flag=True,
    help="Forward this terminal's input (or piped input) to the job's stdin; end of file closes it.",
)


def forward_input(session: Session, job_id: str) -> None:
    """Forward our stdin to the job's input, in the background, for as long as this command runs."""
    InputForwarder(session.api.connection, job_id, session.terminal.note).start()


class JobWatch:
    """Writes a job's events as a local command's output, and keeps how it ended."""

    def __init__(self, job_id: str, terminal: Terminal) -> None:
        self.job_id = job_id
        self.terminal = terminal
        self.outcome: Outcome | None = None

    def handle(self, event: Event) -> bool:
        """Write one event; True once the job's final event has come."""
        data = event.data if isinstance(event.data, dict) else {}
        if event.type in ("stdout", "stderr"):
            self.terminal.output(event.type, str(data.get("out", "")))
        elif event.type == "start":
            argv = [str(item) for item in data.get("argv") or ()]
            self.terminal.status(f"job {self.job_id} started (pid {data.get('pid')}): {shlex.join(argv)}")
        elif event.type == "gap":
            self.terminal.note(
                f"gap: {data.get('missed_bytes')} bytes of output are missing here "
                "(the server's buffer had dropped them)"
            )
        elif event.type == "exit":
            self.outcome = outcome_of_exit(data, self.job_id)
        elif event.type == "err":
            self.outcome = outcome_of_start_failure(data, self.job_id)
        return self.outcome is not None


def _reattach_hint(job_id: str) -> str:
    return f"detached from job {job_id}, which keeps running; reattach with: {PROG} attach {job_id}"


def job_path(job_id: str, rest: str = "") -> str:
    """The path of a job's resource (ids come from people: quoted)."""
    return f"/jobs/{quote(job_id, safe='')}{rest}"


def _cancel(session: Session, job_id: str) -> None:
    """DELETE the job; one that has ended meanwhile (409) is fine: its final event follows."""
    session.api.request("DELETE", job_path(job_id), ok=(200, 202, 409))


def _follow_until_detached(
    session: Session, follower: Follower, handle: Callable[[Event], bool], *, owned: bool,
    cancel: Callable[[], None], cancelling: str, detached: str,
) -> str | None:
    """Follow a stream with ``run``'s Ctrl-C rules: how it ended (``Follower.run``), or None once detached.

    ``owned`` (this client started it): a closed stdout cancels, and the first Ctrl-C cancels and waits
    for the end, a second one detaches. Otherwise Ctrl-C detaches at once."""
    try:
        session.ctrl_c.raise_pending()  # a Ctrl-C while ``run`` was starting it: handled as any other
        return follower.run(handle)
    except BrokenPipeError:
        if owned:
            _quiet_stdout()
            cancel()
        raise
    except KeyboardInterrupt:
        if not owned:
            session.terminal.note(detached)
            return None
        try:
            session.terminal.note(cancelling)
            cancel()
            return follower.run(handle)
        except KeyboardInterrupt:
            session.terminal.note(detached)
            return None


def follow_job(session: Session, job_id: str, *, after: int | None, reconnect_for: float, owned: bool) -> int:
    """Stream a job to its end and return its exit status. ``owned``: this client started it, so Ctrl-C and
    a closed stdout cancel it (a second Ctrl-C detaches); otherwise Ctrl-C only detaches."""
    terminal = session.terminal
    watch = JobWatch(job_id, terminal)
    follower = Follower(
        session.api, job_path(job_id, "/events"), after=None if after is None else str(after),
        reconnect_for=reconnect_for, on_status=terminal.status, held=session.ctrl_c.held, patient=owned,
    )
    ended = _follow_until_detached(
        session, follower, watch.handle, owned=owned, cancel=lambda: _cancel(session, job_id),
        cancelling=f"cancelling job {job_id} (Ctrl-C again to detach)", detached=_reattach_hint(job_id),
    )
    if ended is None:
        return EXIT_DETACHED
    outcome = watch.outcome if ended == Follower.FINISHED else None
    if outcome is None:  # 204: resumed after the final event, which this client has not seen
        outcome = outcome_of_job(session.api.json("GET", job_path(job_id)))
        if outcome is None:
            raise ClientError(f"job {job_id} has no final event yet, but its stream ended")
    if outcome.message:
        terminal.note(outcome.message)
    else:
        terminal.status(outcome.summary)
    return outcome.code


@client_command(allow_interspersed_args=False)
@click.option("--action", metavar="NAME", help="Run a named action; the arguments are its KEY=VALUE parameters.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Seconds before the server stops the job (exit 124).")
@click.option("--merge-stderr", is_flag=True,
              help="One pipe for the remote stdout and stderr: exact order, all of it on stdout.")
@stdin_option
@click.option("--yes", "confirm", is_flag=True,
              help='Confirm an action marked confirm = true (sends "confirm": true); without it, it is refused.')
@click.option("--detach", is_flag=True, help="Print the job's id (a fleet run's id) and return at once.")
@click.option("--wait", is_flag=True, help="When the server is at its limit (429), wait as it says and retry.")
@reconnect_option
@click.option("--hosts", "hosts", multiple=True, metavar="NAME[,NAME]...",
              help="Run it on these hosts (a fleet run, POST /runs); each line is prefixed with its host.")
@click.option("--tags", "tags", multiple=True, metavar="TAG[,TAG]...",
              help="Run it on every host with any of these tags (a fleet run).")
@click.option("--parallel", type=click.IntRange(min=1), metavar="N",
              help="Fleet runs: at most N hosts at a time, the next starting as one ends (default: all at once).")
@click.option("--stop-on-failure", is_flag=True,
              help="Fleet runs: start no more hosts after one fails (those running go on).")
@click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS]... | KEY=VALUE...")
def run(session: Session, words: tuple[str, ...], action: str | None, timeout: float | None, merge_stderr: bool,
        forward_stdin: bool, confirm: bool, detach: bool, wait: bool, reconnect_timeout: float,
        hosts: tuple[str, ...], tags: tuple[str, ...], parallel: int | None, stop_on_failure: bool) -> int:
    """Run a command (or a named action) on the server and stream it like a local one.

    The remote stdout goes to stdout and the remote stderr to stderr, and the exit status is the remote
    one (128+N for signal N; 127/126 if it could not start). Ctrl-C cancels the job and waits for its end;
    a second Ctrl-C detaches and prints how to reattach.

    With --hosts or --tags it runs on many hosts at once: each line is prefixed with its host
    (`web-1 | ...`), and it exits 0 only if every host succeeded; otherwise it prints a table of
    the hosts, their states and exit codes on stderr and exits 1.

    \b
      sse-commander run -- ls -la /tmp
      sse-commander run --action deploy env=staging replicas=2
      sse-commander run --yes --action wipe target=cdn    # an action marked confirm = true
      sse-commander run --tags web --parallel 2 -- uptime
    """
    if hosts or tags:
        if forward_stdin:
            raise click.UsageError("--stdin is not available for fleet runs (--hosts, --tags): their jobs take "
                                   "no input")
        body = job_request(words, action, timeout, merge_stderr=merge_stderr, confirm=confirm)
        return start_run(session, body, action, parse_names(hosts), parse_names(tags), parallel=parallel,
                         stop_on_failure=stop_on_failure, detach=detach, wait=wait, reconnect_for=reconnect_timeout)
    for name, given in (("--parallel", parallel is not None), ("--stop-on-failure", stop_on_failure)):
        if given:
            raise click.UsageError(f"{name} is for fleet runs: give the hosts with --hosts or --tags")
    body = job_request(words, action, timeout, merge_stderr=merge_stderr, stdin=forward_stdin, confirm=confirm)
    session.api.wait = wait
    job_id = str(_start(session, "/jobs", body, action)["id"])
    if detach:
        session.terminal.line(job_id)
        session.ctrl_c.raise_pending()
        return 0
    if forward_stdin:
        forward_input(session, job_id)
    return follow_job(session, job_id, after=None, reconnect_for=reconnect_timeout, owned=True)


def _start(session: Session, path: str, body: dict[str, Any], action: str | None) -> dict[str, Any]:
    """POST a job (or a run); a Ctrl-C meanwhile waits until its id is known, so that it can be cancelled."""
    try:
        return session.api.json("POST", path, json=body, can_wait=True, held=session.ctrl_c.deferred)
    except Refused as exc:
        if exc.status == 400 and "must be confirmed" in str(exc.body.get("message", "")):
            raise ClientError(f"action {action!r} must be confirmed: run it again with --yes") from None
        raise


# Fleets (issue 20): one command on many hosts.

def run_path(run_id: str, rest: str = "") -> str:
    """The path of a run's resource (ids come from people: quoted)."""
    return f"/runs/{quote(run_id, safe='')}{rest}"


def start_run(
    session: Session, job_body: dict[str, Any], action: str | None, hosts: list[str], tags: list[str], *,
    parallel: int | None, stop_on_failure: bool, detach: bool, wait: bool, reconnect_for: float,
) -> int:
    """``run --hosts/--tags``: POST /runs, then follow the run to its end (or print its id with --detach)."""
    if hosts and tags:
        raise click.UsageError("give the targets with --hosts or with --tags, not both")
    if not hosts and not tags:
        raise click.UsageError("--hosts and --tags need at least one name")
    body = run_request(job_body, hosts=hosts, tags=tags, parallel=parallel, stop_on_failure=stop_on_failure)
    session.api.wait = wait
    created = _start(session, "/runs", body, action)
    run_id = str(created["id"])
    if detach:
        session.terminal.line(run_id)
        session.ctrl_c.raise_pending()
        return 0
    targets = [str(name) for name in created.get("hosts") or ()]
    session.terminal.status(f"run {run_id} started on {len(targets)} host{'' if len(targets) == 1 else 's'}: "
                            f"{' '.join(targets)}")
    return follow_run(session, run_id, targets, reconnect_for=reconnect_for, owned=True)


def _cancel_run(session: Session, run_id: str) -> None:
    """DELETE the run; one that has ended meanwhile (409) is fine: its run_exit event follows."""
    session.api.request("DELETE", run_path(run_id), ok=(200, 202, 409))


def _reattach_run_hint(run_id: str) -> str:
    return f"detached from run {run_id}, which keeps running; reattach with: {PROG} runs --follow {run_id}"


def follow_run(session: Session, run_id: str, hosts: Sequence[str], *, reconnect_for: float, owned: bool) -> int:
    """Stream a run to its end: 0 if every host succeeded, else 1 after the hosts' table on stderr. ``owned``:
    Ctrl-C and a closed stdout cancel the run on every host (a second Ctrl-C detaches); otherwise it detaches."""
    terminal = session.terminal
    watch = RunWatch(hosts, terminal)
    follower = Follower(
        session.api, run_path(run_id, "/events"), reconnect_for=reconnect_for, on_status=terminal.status,
        held=session.ctrl_c.held, patient=owned,
    )
    ended = _follow_until_detached(
        session, follower, watch.handle, owned=owned, cancel=lambda: _cancel_run(session, run_id),
        cancelling=f"cancelling run {run_id} on every host (Ctrl-C again to detach)",
        detached=_reattach_run_hint(run_id),
    )
    if ended is None:
        return EXIT_DETACHED
    final = watch.final if ended == Follower.FINISHED else None
    if final is None:  # 204: resumed after run_exit, which this client has not seen
        watch.flush_all()
        final = session.api.json("GET", run_path(run_id))
        if final.get("state") == "running":
            raise ClientError(f"run {run_id} has no final event yet, but its stream ended")
    code = run_exit_status(final)
    if code == 0:
        terminal.status(describe_run_end(final))
        return code
    terminal.note(describe_run_end(final))
    for line in format_run_table(final.get("hosts") or []):
        terminal.report(line)
    return code


@client_command()
def hosts(session: Session) -> int:
    """List the hosts sharing this server's store: state, running jobs, load, last heartbeat and tags."""
    body = session.api.json("GET", "/hosts")
    for line in format_hosts(body.get("hosts") or [], now=time.time()):
        session.terminal.line(line)
    return 0


MAX_RUNS_LISTED = 200  # GET /runs's ?limit= (1-200)


@client_command()
@click.argument("run_id", metavar="[ID]", required=False)
@click.option("--follow", is_flag=True,
              help="Stream the run from its start to its end, and exit as `run --hosts` does (Ctrl-C detaches).")
@click.option("--limit", type=click.IntRange(min=1, max=MAX_RUNS_LISTED), metavar="N",
              help=f"Without an ID: list at most N runs (1-{MAX_RUNS_LISTED}; default: the server's, 50).")
@click.option("--json", "as_json", is_flag=True,
              help="Without an ID: one JSON object per run, as GET /runs/<id> gives it.")
@reconnect_option
def runs(session: Session, run_id: str | None, follow: bool, limit: int | None, as_json: bool,
         reconnect_timeout: float) -> int:
    """List recent fleet runs, newest first; or show one: its state, and each host's state and exit code
    (or follow it with --follow).

    Without an ID: your own runs (everyone's for an admin or a viewer), with how many hosts succeeded.

    \b
      sse-commander runs                        # ID, STATE, HOSTS (2/3 ok), USER, CREATED, COMMAND
      sse-commander runs --limit 5 --json
      sse-commander runs ID
      sse-commander runs --follow ID
    """
    if run_id is None:
        if follow:
            raise click.UsageError("--follow needs the run's ID: sse-commander runs --follow ID")
        return list_runs(session, limit, as_json)
    for name, given in (("--limit", limit is not None), ("--json", as_json)):
        if given:
            raise click.UsageError(f"{name} is for listing runs: give no ID")
    run_body = session.api.json("GET", run_path(run_id))
    targets = [str(host.get("host")) for host in run_body.get("hosts") or ()]
    if follow:
        return follow_run(session, run_id, targets, reconnect_for=reconnect_timeout, owned=False)
    session.terminal.line(f"run {run_body.get('id')} {run_body.get('state')}: {run_body.get('command')}")
    for line in format_run_table(run_body.get("hosts") or []):
        session.terminal.line(line)
    return 0


def list_runs(session: Session, limit: int | None, as_json: bool) -> int:
    """``runs`` without an ID: GET /runs as a table (or JSON lines), newest first."""
    body = session.api.json("GET", "/runs", params={} if limit is None else {"limit": limit})
    listed = [run for run in body.get("runs") or () if isinstance(run, dict)]
    if as_json:
        for run_body in listed:
            session.terminal.line(json.dumps(run_body, ensure_ascii=False))
        return 0
    for line in format_runs(listed):
        session.terminal.line(line)
    return 0


@client_command()
@click.argument("job_id", metavar="ID")
@click.option("--after", type=click.IntRange(min=0), metavar="EVENT_ID",
              help="Follow from after this event id (default: from the start).")
@stdin_option
@reconnect_option
def attach(session: Session, job_id: str, after: int | None, forward_stdin: bool, reconnect_timeout: float) -> int:
    """Follow a job from its start (or after an event id) to its end; exit with its status.

    Ctrl-C only detaches: the job keeps running (`cancel ID` stops it). With --stdin, what you type goes to
    the job's input (a job started with "stdin": true), and Ctrl-D closes it.
    """
    if forward_stdin:
        forward_input(session, job_id)
    return follow_job(session, job_id, after=after, reconnect_for=reconnect_timeout, owned=False)


@client_command()
@click.option("--state", metavar="STATE", help="Only jobs in this state (running, exited, cancelled, ...).")
@click.option("--all", "show_all", is_flag=True, help="Finished jobs too (default: running jobs only).")
def jobs(session: Session, state: str | None, show_all: bool) -> int:
    """List jobs you may see, newest first: running ones, or every kept one with --all."""
    params = {"state": state} if state else ({} if show_all else {"state": "running"})
    body = session.api.json("GET", "/jobs", params=params)
    for line in format_jobs(body.get("jobs") or []):
        session.terminal.line(line)
    return 0


@client_command()
@click.argument("job_id", metavar="ID")
def logs(session: Session, job_id: str) -> int:
    """Write a job's combined output to stdout, byte-exact, following it while it runs.

    Unlike `run` and `attach` (whose events carry text, with invalid UTF-8 shown as U+FFFD), this is
    the output exactly as the command wrote it: NUL, \\r and all.
    """
    try:
        with session.api.stream(job_path(job_id, "/output"), timeout=OUTPUT_TIMEOUT) as response:
            if response.status_code != 200:
                response.read()
                raise session.api.refusal(response)
            dropped = response.headers.get("X-Output-Dropped-Bytes", "0")
            if dropped.isdigit() and int(dropped):
                session.terminal.note(f"gap: the first {dropped} bytes of output are missing (the server's buffer "
                                      "had dropped them)")
            for chunk in response.iter_raw():
                session.terminal.raw(chunk)
    except httpx.TransportError as exc:
        raise session.api.transport_error(exc) from None
    return 0


@client_command()
@click.argument("job_id", metavar="ID")
def cancel(session: Session, job_id: str) -> int:
    """Cancel a job: SIGTERM to its processes, SIGKILL after the server's grace period; print how it ended."""
    response = session.api.request("DELETE", job_path(job_id), ok=(200, 202))
    job = response.json()
    outcome = outcome_of_job(job)
    if outcome is None:
        session.terminal.line(f"job {job_id} is {job.get('state')}: its processes have not all ended yet")
    else:
        session.terminal.line(outcome.summary)
    return 0


# Channels and actions.

@client_command()
@click.argument("channel")
@click.option("--after", metavar="MESSAGE_ID", help="Replay the history after this message id (<epoch>-<n>) first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message: id, event, data, user, time.")
@reconnect_option
def tail(session: Session, channel: str, after: str | None, as_json: bool, reconnect_timeout: float) -> int:
    """Follow a channel's messages, one per line: its retained history first, then live until Ctrl-C."""
    terminal = session.terminal

    def handle(event: Event) -> bool:
        if event.type == "gap":
            missed = event.data.get("missed_messages") if isinstance(event.data, dict) else None
            terminal.note(f"gap: {missed} messages are missing here (the channel's history had dropped them)")
        elif event.type == "reset":
            terminal.note("reset: the channel's history started again (the server restarted?); "
                          "messages may be missing here")
        else:
            terminal.line(format_message(event.type, event.data, as_json=as_json, message_id=event.id))
        return False

    Follower(
        session.api, f"/channels/{quote(channel, safe='')}/events", after=after, reconnect_for=reconnect_timeout,
        on_status=terminal.status, held=session.ctrl_c.held,
    ).run(handle)
    return 0


def message_data(message: str, as_json: bool, stdin: Any) -> Any:
    """What ``publish`` sends as data: MESSAGE, or stdin for ``-`` (one final newline dropped), maybe as JSON."""
    if message == "-":
        raw = stdin.read()
        try:
            message = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ClientError("the message on standard input is not valid UTF-8") from None
        message = message[:-1] if message.endswith("\n") else message
    if not as_json:
        return message
    try:
        return json.loads(message)
    except ValueError as exc:
        raise ClientError(f"--json: the message is not valid JSON: {exc}") from None


@client_command()
@click.argument("channel")
@click.argument("message")
@click.option("--event", metavar="NAME", help="The event type subscribers see (default: message).")
@click.option("--json", "as_json", is_flag=True, help="MESSAGE is JSON, sent as structured data.")
@click.option("--wait", is_flag=True, help="When the server is at its limit (429), wait as it says and retry.")
def publish(session: Session, channel: str, message: str, event: str | None, as_json: bool, wait: bool) -> int:
    """Publish MESSAGE to a channel (`-` reads it from standard input)."""
    body: dict[str, Any] = {"data": message_data(message, as_json, sys.stdin.buffer)}
    if event is not None:
        body["event"] = event
    session.api.wait = wait
    answer = session.api.json("POST", f"/channels/{quote(channel, safe='')}/messages", json=body, can_wait=True)
    session.terminal.status(f"published message {answer.get('id')} to {channel}")
    return 0


@client_command()
def actions(session: Session) -> int:
    """List the named actions you may run, with their parameters, and the commands you may type."""
    for line in format_actions(session.api.json("GET", "/actions")):
        session.terminal.line(line)
    return 0


COMMANDS = (run, attach, jobs, logs, cancel, tail, publish, actions, hosts, runs)
