"""The client's pure parts: exit codes, messages, formatting, backoff, tokens, and its command-line surface."""

from __future__ import annotations

import io
import os
import signal

import click
import httpx
import pytest
from click.testing import CliRunner

from app import config
from app.cli import cli, main
from app.client import connection
from app.client.api import describe_refusal, describe_transport_error
from app.client.commands import COMMANDS, ClientCommand, job_request, message_data
from app.client.events import backoff_delay, is_repeat
from app.client.exitcodes import (
    EXIT_CLIENT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_OUTPUT_LIMIT,
    EXIT_TIMEOUT,
    EXIT_UNKILLABLE,
    EXIT_UNKNOWN_END,
    outcome_of_exit,
    outcome_of_job,
    outcome_of_start_failure,
)
from app.client.interrupts import CtrlC
from app.client.output import (
    Terminal,
    colour_wanted,
    format_actions,
    format_duration,
    format_jobs,
    format_message,
)

# Exit codes.


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"reason": "exited", "code": 0}, 0),
        ({"reason": "exited", "code": 3}, 3),
        ({"reason": "exited", "code": 255}, 255),
        ({"reason": "killed", "code": None, "signal": 9, "signal_name": "SIGKILL"}, 137),
        ({"reason": "cancelled", "signal": 15}, 143),
        ({"reason": "cancelled", "code": 0}, 0),  # it handled SIGTERM and exited by itself
        ({"reason": "disconnected", "signal": 15}, 143),
        ({"reason": "shutdown", "signal": 15}, 143),
        ({"reason": "timeout", "signal": 15}, EXIT_TIMEOUT),
        ({"reason": "timeout", "code": 0}, EXIT_TIMEOUT),
        ({"reason": "output_limit", "signal": 15}, EXIT_OUTPUT_LIMIT),
        # Endings that other issues add (containment, history, Redis), by name.
        ({"reason": "unkillable"}, EXIT_UNKILLABLE),
        ({"reason": "interrupted"}, EXIT_INTERRUPTED),
        ({"reason": "lost", "code": None, "signal": None}, EXIT_LOST),
        # An ending this client does not know: its status if it has one, else 125.
        ({"reason": "evicted", "signal": 9}, 137),
        ({"reason": "evicted", "code": 4}, 4),
        ({"reason": "evicted"}, EXIT_UNKNOWN_END),
        ({"reason": "killed", "signal": 77}, 128 + 77),
    ],
)
def test_exit_event_to_exit_status(data, code):
    assert outcome_of_exit(data).code == code


def test_documented_codes_are_distinct_and_clear_of_shell_and_ssh_codes():
    documented = [EXIT_TIMEOUT, EXIT_OUTPUT_LIMIT, EXIT_UNKILLABLE, EXIT_INTERRUPTED, EXIT_LOST, EXIT_UNKNOWN_END]
    assert len(set(documented)) == len(documented)
    assert all(120 <= code <= 125 for code in documented)
    assert EXIT_CLIENT_ERROR == 255


def test_only_abnormal_endings_explain_themselves():
    assert outcome_of_exit({"reason": "exited", "code": 1}).message is None
    assert outcome_of_exit({"reason": "exited", "code": 0, "duration": 1.5}, "abc").summary == (
        "job abc exited with code 0 after 1.50 s"
    )
    assert outcome_of_exit({"reason": "timeout", "signal": 15, "signal_name": "SIGTERM"}, "abc").message == (
        "job abc timed out (killed by SIGTERM)"
    )
    assert outcome_of_exit({"reason": "killed", "signal": 77}).message == (
        "the job was killed by a signal nobody here sent (killed by signal 77)"
    )
    assert "ended (evicted)" in outcome_of_exit({"reason": "evicted"}).message
    assert outcome_of_exit({"reason": "cancelled", "signal": 15, "cancelled_by": "alice"}, "abc").message == (
        "job abc was cancelled by alice (killed by SIGTERM)"
    )
    assert outcome_of_job({"id": "abc", "state": "cancelled", "reason": "cancelled", "signal": 15,
                           "cancelled_by": "alice"}).message == "job abc was cancelled by alice (killed by SIGTERM)"


@pytest.mark.parametrize(
    ("reason", "code"), [("not_found", 127), ("not_executable", 126), ("spawn_failed", 126), ("newer", 126)]
)
def test_start_failures_as_a_shell_reports_them(reason, code):
    outcome = outcome_of_start_failure({"type": "error", "out": "x: No such file", "reason": reason}, "j")
    assert outcome.code == code
    assert outcome.message.startswith("job j could not start") and outcome.message.endswith(": x: No such file")


def test_a_job_record_gives_the_same_status_as_its_final_event():
    assert outcome_of_job({"id": "j", "state": "running"}) is None
    assert outcome_of_job({"id": "j", "state": "stopping"}) is None
    assert outcome_of_job({"id": "j", "state": "exited", "reason": "exited", "exit_code": 2}).code == 2
    assert outcome_of_job({"id": "j", "state": "timed_out", "reason": None, "signal": 15}).code == EXIT_TIMEOUT
    assert outcome_of_job({"id": "j", "state": "cancelled", "reason": "cancelled", "signal": 15}).code == 143
    assert outcome_of_job({"id": "j", "state": "failed_to_start", "reason": "not_found", "error": "e"}).code == 127
    assert outcome_of_job({"id": "j", "state": "lost"}).code == EXIT_LOST
    assert outcome_of_job({"id": "j", "state": "interrupted"}).code == EXIT_INTERRUPTED


# Errors in one line.


def test_refusals_in_one_line_say_what_to_do():
    assert describe_refusal(401, {"message": "authentication required"}) == (
        "not authenticated: the server wants a token: set SSECMD_TOKEN or pass --token-file "
        "(authentication required) (401)"
    )
    assert "refused the token" in describe_refusal(401, {"message": "unknown or revoked token"}, token_sent=True)
    assert describe_refusal(403, {"error": "command_not_allowed", "message": "command 'rm' is not allowed",
                                  "allowed": ["echo", "ls"]}) == (
        "forbidden: command 'rm' is not allowed (allowed: echo ls) (403)"
    )
    assert describe_refusal(404, {"message": "no job with id 'x'"}) == "not found: no job with id 'x' (404)"
    assert describe_refusal(429, {"message": "busy"}, retry_in=5, can_wait=True) == (
        "too many requests: busy; the server says retry in 5 s; pass --wait to wait for it (429)"
    )
    assert describe_refusal(502, {}, reason_phrase="Bad Gateway") == "the server failed: Bad Gateway (502)"
    assert describe_refusal(409, {"message": "job j is not running"}) == "job j is not running (409)"
    for text in (describe_refusal(400, {"message": "a\nb"}),):
        assert "\n" in text  # the server's own text is passed as is; the server never puts newlines in it


def test_transport_errors_in_one_line():
    url = "http://127.0.0.1:9"
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    assert describe_transport_error(refused, url) == (
        f"cannot connect to {url}: connection refused (is the server running? see --url)"
    )
    assert describe_transport_error(httpx.ConnectTimeout("timed out"), url) == f"cannot connect to {url}: timed out"
    assert describe_transport_error(httpx.ReadTimeout("x"), url) == f"{url} did not answer in time"
    cut = httpx.RemoteProtocolError("peer closed connection without sending complete message body")
    assert describe_transport_error(cut, url).startswith(f"the connection to {url} broke: peer closed")


# Reconnecting.


def test_backoff_starts_at_the_servers_retry_and_doubles_to_a_ceiling():
    assert [backoff_delay(2000, n) for n in range(1, 8)] == [2, 4, 8, 16, 30, 30, 30]
    assert backoff_delay(200, 1) == 0.2 and backoff_delay(200, 2) == 0.4
    assert backoff_delay(60000, 3) == 60  # a server asking for longer than the ceiling gets its way


def test_repeats_are_numeric_ids_not_past_the_last_one():
    assert is_repeat("5", "5") and is_repeat("4", "5") and not is_repeat("6", "5")
    assert not is_repeat("5", None)
    assert not is_repeat("job:a=1", "job:a=2")  # composite cursors: trust the server


# Requests the commands build.


def test_job_request_bodies():
    assert job_request(["ls", "-la"], None, None) == {"argv": ["ls", "-la"]}
    assert job_request(["ls"], None, 5.0) == {"argv": ["ls"], "timeout": 5.0}
    assert job_request(["env=staging", "note=a=b"], "deploy", None) == {
        "action": "deploy", "params": {"env": "staging", "note": "a=b"}
    }
    assert job_request([], "deploy", 10) == {"action": "deploy", "params": {}, "timeout": 10}
    assert job_request(["ls"], None, None, merge_stderr=True) == {"argv": ["ls"], "stderr": "merged"}
    assert job_request(["cat"], None, None, stdin=True) == {"argv": ["cat"], "stdin": True}
    assert job_request([], "wipe", None, confirm=True) == {"action": "wipe", "params": {}, "confirm": True}
    with pytest.raises(click.UsageError, match="--yes confirms a named action"):
        job_request(["ls"], None, None, confirm=True)
    with pytest.raises(click.UsageError):
        job_request([], None, None)
    with pytest.raises(click.UsageError):
        job_request(["=x"], "deploy", None)


def test_message_data_from_the_argument_or_stdin():
    assert message_data("hello", False, None) == "hello"
    assert message_data("-", False, io.BytesIO(b"line\n")) == "line"
    assert message_data("-", False, io.BytesIO(b"two\nlines\n\n")) == "two\nlines\n"
    assert message_data("-", True, io.BytesIO(b'{"a": [1]}\n')) == {"a": [1]}
    assert message_data("[1, 2]", True, None) == [1, 2]
    from app.client.api import ClientError

    with pytest.raises(ClientError, match="not valid UTF-8"):
        message_data("-", False, io.BytesIO(b"\xff"))
    with pytest.raises(ClientError, match="not valid JSON"):
        message_data("{", True, None)


# The server and the token.


def test_urls():
    assert connection.check_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert connection.check_url("https://ops.example.org/sse") == "https://ops.example.org/sse"
    for bad in ("127.0.0.1:8000", "ftp://host", "http://", "http://host/?x=1"):
        with pytest.raises(connection.ConnectionConfigError):
            connection.check_url(bad)


def test_token_files_must_be_private(tmp_path):
    path = tmp_path / "token"
    path.write_text("ssecmd_abc\n")
    for mode in (0o600, 0o400):
        path.chmod(mode)
        assert connection.read_token_file(str(path)) == "ssecmd_abc"
    for mode in (0o640, 0o604, 0o620, 0o602, 0o644, 0o610):
        path.chmod(mode)
        with pytest.raises(connection.ConnectionConfigError, match=f"mode {mode:04o}.*chmod 600"):
            connection.read_token_file(str(path))
    path.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(path)
    assert connection.read_token_file(str(link)) == "ssecmd_abc"  # the file it names is what is judged
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(connection.ConnectionConfigError, match="not a regular file"):
        connection.read_token_file(str(fifo))
    with pytest.raises(connection.ConnectionConfigError, match="not a regular file"):
        connection.read_token_file(str(tmp_path))
    path.write_text("   \n")
    with pytest.raises(connection.ConnectionConfigError, match="is empty"):
        connection.read_token_file(str(path))
    path.write_text("two words\n")
    with pytest.raises(connection.ConnectionConfigError, match="characters a token cannot have"):
        connection.read_token_file(str(path))


def test_a_token_file_wins_over_the_environment(tmp_path):
    path = tmp_path / "token"
    path.write_text("from-file")
    path.chmod(0o600)
    env = {"SSECMD_TOKEN": "from-env"}
    assert connection.resolve("http://h", str(path), env).token == "from-file"
    assert connection.resolve("http://h", None, env).token == "from-env"
    assert connection.resolve("http://h", None, {}).token is None


def test_the_server_skips_exactly_the_variables_the_client_reads():
    assert set(connection.CLIENT_ENV) == config.CLIENT_ENV
    declared = {param.envvar for command in COMMANDS for param in command.params if param.envvar}
    assert declared | {connection.TOKEN_ENV} == config.CLIENT_ENV


# Writing.


def test_colour_only_when_both_streams_are_a_terminal_and_no_color_is_unset_or_empty():
    assert colour_wanted(True, True, {})
    assert colour_wanted(True, True, {"NO_COLOR": ""})
    assert not colour_wanted(True, True, {"NO_COLOR": "1"})
    assert not colour_wanted(False, True, {})
    assert not colour_wanted(True, False, {})


def _terminal(**options) -> tuple[Terminal, io.BytesIO, io.BytesIO]:
    out, err = io.BytesIO(), io.BytesIO()
    return Terminal(out, err, **options), out, err


def test_output_is_written_as_the_events_carry_it():
    terminal, out, err = _terminal()
    terminal.output("stdout", "a\r\nb\x00c\ufffd\x1b[1m")
    terminal.output("stderr", "oops\n")
    assert out.getvalue() == "a\r\nb\x00c\ufffd\x1b[1m".encode()
    assert err.getvalue() == b"oops\n"
    coloured, out, err = _terminal(colour=True)
    coloured.output("stderr", "oops\n")
    coloured.output("stdout", "fine\n")
    assert err.getvalue() == b"\x1b[31moops\n\x1b[0m" and out.getvalue() == b"fine\n"


def test_notes_start_on_a_line_of_their_own_on_a_terminal():
    terminal, _, err = _terminal(stdout_tty=True, stderr_tty=True)
    terminal.output("stdout", "no newline")
    terminal.note("done")
    assert err.getvalue() == b"\nsse-commander: done\n"
    terminal.note("again")
    assert err.getvalue().endswith(b"done\nsse-commander: again\n")
    piped, _out, err = _terminal(stdout_tty=False, stderr_tty=False)
    piped.output("stdout", "no newline")
    piped.note("done")
    assert err.getvalue() == b"sse-commander: done\n"  # a file gets no blank lines of ours
    quiet, _, err = _terminal()
    quiet.status("only with -v")
    assert err.getvalue() == b""


def test_durations():
    assert [format_duration(s) for s in (None, 0.04, 59.94, 60, 3599, 3600, 90061)] == [
        "", "0.0s", "59.9s", "1m00s", "59m59s", "1h00m", "25h01m"
    ]


def test_the_jobs_table():
    jobs = [
        {"id": "b" * 16, "state": "running", "owner": "alice", "command": "sleep 60", "exit_code": None,
         "duration": 5.0, "started_at": None, "created_at": None},
        {"id": "a" * 16, "state": "failed_to_start", "reason": "not_found", "owner": "bob", "argv": ["nope"]},
        {"id": "c" * 16, "state": "cancelled", "signal": 15, "signal_name": "SIGTERM", "owner": "alice",
         "action": "deploy", "params": {"env": "staging"}, "duration": 61},
    ]
    lines = format_jobs(jobs)
    assert [line.split()[:3] for line in lines] == [
        ["ID", "STATE", "EXIT"], ["b" * 16, "running", "alice"], ["a" * 16, "failed_to_start", "not_found"],
        ["c" * 16, "cancelled", "SIGTERM"],
    ]
    assert lines[1].endswith("5.0s      sleep 60")
    assert lines[3].endswith("1m01s     action deploy env=staging")
    assert lines[0].index("COMMAND") == lines[1].index("sleep 60") == lines[3].index("action deploy")


def test_the_actions_listing():
    body = {
        "actions": [
            {"name": "deploy", "description": "Deploy a service", "params": [
                {"name": "env", "type": "choice", "choices": ["staging", "production"], "required": True},
                {"name": "replicas", "type": "integer", "min": 1, "max": 10, "default": 2, "required": False},
                {"name": "tag", "type": "string", "pattern": None, "required": True, "description": "image tag"},
            ]},
            {"name": "restart", "description": "", "params": []},
        ],
        "commands": ["echo", "ls"],
    }
    assert format_actions(body) == [
        "deploy  Deploy a service",
        "    env=one of staging, production (required)",
        "    replicas=integer 1..10 (default 2)",
        "    tag=text (required): image tag",
        "restart",
        "",
        "commands: echo ls",
    ]
    assert format_actions({"actions": [], "commands": []}) == []


def test_channel_messages_as_tail_prints_them():
    payload = {"data": "hello", "user": "alice", "time": "2026-01-01T00:00:00.000+00:00"}
    assert format_message("message", payload, as_json=False, message_id="3") == "hello"
    assert format_message("notice", {"data": {"a": 1}}, as_json=False, message_id="4") == '{"a": 1}'
    assert format_message("message", payload, as_json=True, message_id="3") == (
        '{"id": "3", "event": "message", "data": "hello", "user": "alice", "time": "2026-01-01T00:00:00.000+00:00"}'
    )


# Ctrl-C.


def test_ctrl_c_waits_for_the_end_of_a_held_block():
    previous = signal.getsignal(signal.SIGINT)
    ctrl_c = CtrlC()
    ctrl_c.install()
    try:
        steps = []
        with pytest.raises(KeyboardInterrupt), ctrl_c.held():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("written")
            steps.append("id recorded")
        assert steps == ["written", "id recorded"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("never")
        assert "never" not in steps
        # Deferred (while a job starts): the Ctrl-C waits until its id is known and someone asks.
        with ctrl_c.deferred():
            os.kill(os.getpid(), signal.SIGINT)
        steps.append("job id known")
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.raise_pending()
        ctrl_c.raise_pending()  # only once
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        CtrlC().install()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# The command line.


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: cli {name} ")
    command = cli.commands[name]
    assert command.help and len(command.help.split()) > 4
    assert all(param.help for param in command.params if isinstance(param, click.Option))


def test_client_commands_and_server_commands():
    client_names = {name for name, command in cli.commands.items() if isinstance(command, ClientCommand)}
    assert client_names == {"run", "attach", "jobs", "logs", "cancel", "tail", "publish", "actions", "hosts", "runs"}
    assert set(cli.commands) - client_names == {"serve", "settings", "token", "password", "history"}


def test_main_returns_exit_codes_without_raising(capsys):
    assert main(["--version"]) == 0
    assert main(["run"]) == EXIT_CLIENT_ERROR
    assert main(["token"]) == 2
    assert "Missing option '--user'" in capsys.readouterr().err
