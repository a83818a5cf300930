"""The client's run, attach, logs, jobs and cancel, as a subprocess against the real server."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import time

import httpx
import pytest

from .client_support import CLIENT, client, client_env, no_traceback, read_until, start_client
from .server import PYTHON, helper, wait_until


def _emit(*writes: str) -> list[str]:
    """argv of the emit.py helper: exact bytes to stdout/stderr (see tests/helpers/emit.py)."""
    return [PYTHON, helper("emit.py"), *writes]


def _hex(text: bytes) -> str:
    return text.hex()


def _job(server, job_id: str) -> dict:
    return httpx.get(server.url(f"/jobs/{job_id}"), timeout=10).json()


def _detached(server, *argv: str) -> str:
    result = client(server, "run", "--detach", "--", *argv)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.decode().strip()
    assert len(job_id) == 16 and result.stderr == b""
    return job_id


def _finished(server, job_id: str, timeout: float = 15) -> dict:
    state: dict = {}

    def ended() -> bool:
        state.update(_job(server, job_id))
        return state["state"] != "running"

    assert wait_until(ended, timeout), state
    return state


# Exit codes.

@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["true"], 0),
        (["false"], 1),
        (["ls", "/nonexistent-dir"], 2),
        ([PYTHON, "-c", "import sys; sys.exit(42)"], 42),
        ([PYTHON, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], 128 + 9),
        ([PYTHON, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGUSR1)"], 128 + 10),
    ],
)
def test_run_exits_with_the_remote_status(server, argv, code):
    result = client(server, "run", "--", *argv)
    assert result.returncode == code, result.stderr


def test_a_signal_nobody_here_sent_is_named_on_stderr(server):
    result = client(server, "run", "--", PYTHON, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert result.returncode == 137
    assert b"was killed by a signal nobody here sent (killed by SIGKILL)" in result.stderr


def test_timeout_exits_124_and_says_so(server):
    started = time.monotonic()
    result = client(server, "run", "--timeout", "1", "--", "sleep", "30")
    assert result.returncode == 124
    assert time.monotonic() - started < 15
    assert b"timed out" in result.stderr


def test_output_limit_exits_123_and_says_so(make_server):
    srv = make_server({"SSECMD_MAX_OUTPUT_BYTES": "100000"})
    result = client(srv, "run", "--", "yes")
    assert result.returncode == 123, result.stderr[-500:]
    assert b"reached the output limit" in result.stderr
    assert len(result.stdout) >= 100000


def test_start_failures_exit_127_and_126_as_a_shell_would(make_server, tmp_path):
    plain_file = tmp_path / "not-a-program"
    plain_file.write_text("data")
    missing = tmp_path / "missing-program"
    srv = make_server({"SSECMD_ALLOWED_COMMANDS": f"echo {plain_file} {missing}"})
    not_found = client(srv, "run", "--", str(missing))
    assert not_found.returncode == 127
    assert b"could not start: command not found" in not_found.stderr and not_found.stdout == b""
    not_executable = client(srv, "run", "--", str(plain_file))
    assert not_executable.returncode == 126
    assert b"could not start: not executable" in not_executable.stderr


# Streams.

def test_remote_stdout_and_stderr_go_to_local_stdout_and_stderr(server):
    result = client(server, "run", "--", *_emit("out:" + _hex(b"to out\n"), "err:" + _hex(b"to err\n"),
                                                "out:" + _hex(b"more out\n")))
    assert result.returncode == 0
    assert result.stdout == b"to out\nmore out\n"
    assert result.stderr == b"to err\n"  # piped: no colour, and no notes without -v


def test_merge_stderr_puts_both_streams_on_stdout_in_exact_order(server):
    script = "import os; [os.write(n % 2 + 1, b'%d\\n' % n) for n in range(6)]"  # 0 out, 1 err, 2 out, ...
    result = client(server, "run", "--merge-stderr", "--", PYTHON, "-c", script)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == (b"0\n1\n2\n3\n4\n5\n", b"")


def test_binary_output_round_trip_run_shows_text_and_logs_the_exact_bytes(server):
    exact = b"a\x00b\r\nc\xff\xfe\rd\xe2\x82\xac\n"
    result = client(server, "run", "--", "printf", "a\\0b\\r\\nc\\377\\376\\rd\\342\\202\\254\\n")
    assert result.returncode == 0
    # The events carry text: invalid UTF-8 became U+FFFD; everything else is as written.
    assert result.stdout == exact.decode("utf-8", "replace").encode()
    job_id = httpx.get(server.url("/jobs")).json()["jobs"][0]["id"]
    logs = client(server, "logs", job_id)
    assert logs.returncode == 0 and logs.stdout == exact and logs.stderr == b""


def test_logs_follows_a_running_job_to_its_end(server):
    job_id = _detached(server, *_emit("out:" + _hex(b"first\n") + ":1", "out:" + _hex(b"second\n")))
    result = client(server, "logs", job_id)
    assert result.stdout == b"first\nsecond\n"


def test_big_output_arrives_whole_and_in_order(server):
    result = client(server, "run", "--", "seq", "200000")
    assert result.returncode == 0
    assert result.stdout == b"".join(b"%d\n" % n for n in range(1, 200001))


# Detach and reattach.

def test_detach_prints_the_id_and_attach_follows_the_job_to_its_exit_code(server):
    job_id = _detached(server, *_emit("out:" + _hex(b"one\n") + ":0.5", "err:" + _hex(b"two\n"), "out:" + _hex(b"3\n")))
    attached = client(server, "attach", job_id)
    assert attached.stdout == b"one\n3\n" and attached.stderr == b"two\n"
    assert attached.returncode == 0
    # Again, once it has ended: a replay from the start, with the same status.
    failed = _detached(server, "ls", "/nonexistent-dir")
    _finished(server, failed)
    again = client(server, "attach", failed)
    assert again.returncode == 2 and b"No such file" in again.stderr


def test_attach_after_an_event_id_resumes_there(server):
    job_id = _detached(server, *_emit("out:" + _hex(b"abc\n") + ":0.3", "out:" + _hex(b"def\n")))
    _finished(server, job_id)
    events = httpx.get(server.url(f"/jobs/{job_id}/events")).text
    ids = [int(line[4:]) for line in events.splitlines() if line.startswith("id: ")]
    # ids: start, then the first write's last byte (id = bytes + 1), ...
    after_first = ids[1]
    resumed = client(server, "attach", "--after", str(after_first), job_id)
    assert resumed.stdout == b"def\n" and resumed.returncode == 0
    # After the final event there is nothing to follow (204): the status still comes from the job.
    last = client(server, "attach", "--after", str(ids[-1]), job_id)
    assert last.stdout == b"" and last.returncode == 0


def test_a_gap_is_reported_on_stderr_with_its_byte_count(make_server):
    srv = make_server({"SSECMD_HISTORY": "false", "SSECMD_JOB_BUFFER_BYTES": "65536", "SSECMD_READ_CHUNK_BYTES": "4096",
                       "SSECMD_COALESCE_BYTES": "4096"})
    job_id = _detached(srv, "seq", "100000")  # 588,895 bytes, far beyond the buffer
    job = _finished(srv, job_id)
    assert job["dropped_bytes"] > 0
    attached = client(srv, "attach", job_id)
    assert attached.returncode == 0
    assert f"gap: {job['dropped_bytes']} bytes of output are missing here".encode() in attached.stderr
    everything = b"".join(b"%d\n" % n for n in range(1, 100001))
    assert everything.endswith(attached.stdout) and len(attached.stdout) > 1000
    logs = client(srv, "logs", job_id)
    assert f"gap: the first {job['dropped_bytes']} bytes of output are missing".encode() in logs.stderr
    assert logs.stdout == everything[job["dropped_bytes"]:]


# Listing and cancelling.

def test_jobs_lists_running_jobs_newest_first_and_all_with_all(make_server):
    srv = make_server()
    done = _detached(srv, "true")
    _finished(srv, done)
    older = _detached(srv, "sleep", "30")
    newer = _detached(srv, "sleep", "31")
    try:
        running = client(srv, "jobs")
        lines = running.stdout.decode().splitlines()
        assert lines[0].split() == ["ID", "STATE", "EXIT", "USER", "STARTED", "DURATION", "COMMAND"]
        assert [line.split()[0] for line in lines[1:]] == [newer, older]
        assert lines[1].endswith("sleep 31") and " running " in lines[1]
        everything = client(srv, "jobs", "--all").stdout.decode().splitlines()
        assert [line.split()[0] for line in everything[1:]] == [newer, older, done]
        exited = client(srv, "jobs", "--state", "exited").stdout.decode().splitlines()
        assert [line.split()[0] for line in exited[1:]] == [done]
        assert exited[1].split()[1:3] == ["exited", "0"]
        bad = client(srv, "jobs", "--state", "sleepy")
        assert bad.returncode == 255 and b"state must be one of" in bad.stderr
    finally:
        for job_id in (older, newer):
            client(srv, "cancel", job_id)


def test_cancel_stops_the_job_and_says_how_it_ended(server):
    job_id = _detached(server, "sleep", "30")
    result = client(server, "cancel", job_id)
    assert result.returncode == 0
    assert result.stdout.decode().startswith(f"job {job_id} was cancelled (killed by SIGTERM)")
    assert _job(server, job_id)["state"] == "cancelled"
    assert _job(server, job_id)["cancelled_by"] is None  # no auth here: nobody to name
    again = client(server, "cancel", job_id)
    assert again.returncode == 255
    assert again.stderr.decode().strip() == f"sse-commander: job {job_id} is not running (409)"


def test_attach_reports_a_cancel_by_someone_else(server):
    sleeper = _detached(server, "sleep", "30")
    watcher = subprocess.Popen([CLIENT, "attach", sleeper], env=client_env(server), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    time.sleep(0.5)
    assert client(server, "cancel", sleeper).returncode == 0
    _out, err = watcher.communicate(timeout=15)
    no_traceback(err)
    assert watcher.returncode == 128 + signal.SIGTERM
    assert b"was cancelled (killed by SIGTERM)" in err


# What it looks like on a terminal.

def _on_a_terminal(server, *args: str, **env: str) -> bytes:
    """Run the client with stdout and stderr on a pseudo-terminal; everything it wrote there."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([CLIENT, *args], env=client_env(server, **env), stdin=subprocess.DEVNULL,
                            stdout=terminal, stderr=terminal)
    os.close(terminal)
    seen = read_until(controller, b"\0never\0")  # to the end: EIO once the client has closed the terminal
    os.close(controller)
    assert proc.wait(15) == 0
    no_traceback(seen)
    return seen


def test_stderr_is_red_on_a_terminal_unless_no_color(server):
    argv = _emit("out:" + _hex(b"plain\n") + ":0.2", "err:" + _hex(b"alarm\n"))
    shown = _on_a_terminal(server, "run", "--", *argv)
    assert b"\x1b[31malarm\r\n\x1b[0m" in shown  # the terminal turns \n into \r\n
    assert b"plain\r\n" in shown and b"\x1b[31mplain" not in shown
    plain = _on_a_terminal(server, "run", "--", *argv, NO_COLOR="1")
    assert b"\x1b" not in plain and b"alarm" in plain
    # NO_COLOR only counts when set to something (no-color.org).
    assert b"\x1b[31malarm" in _on_a_terminal(server, "run", "--", *argv, NO_COLOR="")


def test_verbose_adds_status_lines_on_stderr_only(server):
    result = client(server, "run", "-v", "--", "echo", "hello")
    assert result.stdout == b"hello\n"
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"sse-commander: job [0-9a-f]{16} started \(pid \d+\): echo hello", lines[0])
    assert re.fullmatch(r"sse-commander: job [0-9a-f]{16} exited with code 0 after \d+\.\d\d s", lines[1])
    shown = _on_a_terminal(server, "run", "-v", "--", "printf", "no newline")
    assert b"no newline\r\nsse-commander: job " in shown  # a note starts on a line of its own


def test_a_closed_stdout_cancels_the_job_it_started(server):
    proc = subprocess.Popen([CLIENT, "run", "--", "yes"], env=client_env(server), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.read(10) == b"y\ny\ny\ny\ny\n"
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(15) == 128 + signal.SIGPIPE
    no_traceback(err)
    job = httpx.get(server.url("/jobs")).json()["jobs"][0]
    assert job["argv"] == ["yes"]
    assert _finished(server, job["id"])["state"] == "cancelled"


def test_actions_lists_actions_and_commands(make_server):
    actions = {
        "greet": {"description": "Say hello", "argv": ["echo", "hello", "{name}"],
                  "params": {"name": {"type": "string", "pattern": "[a-z]{1,10}"}}},
        "count": {"argv": ["seq", "{n}"], "params": {"n": {"type": "integer", "min": 1, "max": 5, "default": 3}}},
        "wipe": {"argv": ["echo", "wiped"], "confirm": True},
    }
    srv = make_server({"SSECMD_ACTIONS": json.dumps(actions)})
    listing = client(srv, "actions").stdout.decode().splitlines()
    assert listing[:4] == [
        "count",
        "    n=integer 1..5 (default 3)",
        "greet  Say hello",
        "    name=text matching [a-z]{1,10} (required)",
    ]
    assert listing[-1].startswith("commands: cat date echo ")
    ran = client(srv, "run", "--action", "greet", "name=world")
    assert ran.returncode == 0 and ran.stdout == b"hello world\n"
    counted = client(srv, "run", "--action", "count")
    assert counted.stdout == b"1\n2\n3\n"
    refused = client(srv, "run", "--action", "greet", "name=World")
    assert refused.returncode == 255 and b"parameter 'name': must match" in refused.stderr
    assert client(srv, "run", "--action", "greet", "oops").returncode == 255
    # An action marked confirm = true: refused without --yes (nothing runs), run with it.
    assert "wipe  (asks first: run --yes)" in listing
    unconfirmed = client(srv, "run", "--action", "wipe")
    assert unconfirmed.returncode == 255 and unconfirmed.stdout == b""
    assert unconfirmed.stderr == b"sse-commander: action 'wipe' must be confirmed: run it again with --yes\n"
    confirmed = client(srv, "run", "--yes", "--action", "wipe")
    assert (confirmed.returncode, confirmed.stdout) == (0, b"wiped\n")


# Channels.

def test_publish_from_an_argument_or_stdin_and_tail_replays_them(make_server):
    srv = make_server({"SSECMD_CHANNEL_HISTORY": "4"})
    assert client(srv, "publish", "news", "first").returncode == 0
    piped = client(srv, "publish", "-v", "news", "-", stdin=b"from stdin\nsecond line\n")
    assert piped.returncode == 0
    assert re.fullmatch(rb"sse-commander: published message [0-9a-z]{6}-2 to news\n", piped.stderr), piped.stderr
    assert client(srv, "publish", "--json", "--event", "notice", "news", '{"level": 3}').returncode == 0
    bad = client(srv, "publish", "--json", "news", "{oops")
    assert bad.returncode == 255 and b"--json: the message is not valid JSON" in bad.stderr
    for n in range(4, 7):
        client(srv, "publish", "news", f"message {n}")
    epoch = httpx.get(srv.url("/channels")).json()["channels"]
    epoch = next(c["last_id"] for c in epoch if c["name"] == "news").split("-")[0]
    # History keeps 4 (ids 3-6): a resume after id 1 misses one message, and says so.
    proc = start_client(srv, "tail", "--after", f"{epoch}-1", "news")
    shown = read_until(proc.stdout, b"message 6\n")
    assert shown == b'{"level": 3}\nmessage 4\nmessage 5\nmessage 6\n'
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert err == b"sse-commander: gap: 1 messages are missing here (the channel's history had dropped them)\n"
    assert proc.returncode == 130
    as_json = start_client(srv, "tail", "--after", f"{epoch}-4", "--json", "news")
    lines = read_until(as_json.stdout, b"message 6").splitlines()
    as_json.send_signal(signal.SIGINT)
    as_json.communicate(timeout=10)
    first = json.loads(lines[0])
    assert (first["id"], first["event"], first["data"], first["user"]) == (f"{epoch}-5", "message", "message 5", None)
    # An id of another history (a server restarted since; a bare number from an older server): told, then the
    # history the server has.
    reset = start_client(srv, "tail", "--after", "41", "news")
    shown = read_until(reset.stdout, b"message 6\n")
    reset.send_signal(signal.SIGINT)
    _, err = reset.communicate(timeout=10)
    assert shown == b'{"level": 3}\nmessage 4\nmessage 5\nmessage 6\n'
    assert err == b"sse-commander: reset: the channel's history started again (the server restarted?); " \
                  b"messages may be missing here\n"
    assert first["time"].endswith("+00:00")
    # What came from stdin, as sent: one final newline dropped, the inner one kept.
    assert client(srv, "publish", "inbox", "-", stdin=b"from stdin\nsecond line\n\n").returncode == 0
    replay = start_client(srv, "tail", "--json", "inbox")
    line = read_until(replay.stdout, b"}\n")
    replay.send_signal(signal.SIGINT)
    replay.communicate(timeout=10)
    assert json.loads(line)["data"] == "from stdin\nsecond line\n"
