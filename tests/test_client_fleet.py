"""The fleet client (issue 20) as a subprocess against the real server: run --hosts/--tags, hosts, runs [ID].

One server on the memory store is a fleet of one host (its own); what several hosts look like is
tested over scripted events in test_client_fleet_units.py.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess

import httpx
import pytest

from .client_support import CLIENT, CuttingProxy, client, client_env, no_traceback, read_until, start_client
from .server import PYTHON, GunicornServer, helper, wait_until

HOST = "fleet-host-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A host with a known name and tags, small events (for cuts mid-stream), a short retry: and a 1 s heartbeat."""
    srv = GunicornServer(tmp_path_factory.mktemp("fleet"), {
        "SSECMD_HOST_NAME": HOST, "SSECMD_HOST_TAGS": "web,eu", "SSECMD_RETRY_MS": "200",
        "SSECMD_READ_CHUNK_BYTES": "4096", "SSECMD_COALESCE_BYTES": "4096", "SSECMD_HEARTBEAT_INTERVAL": "1",
        "SSECMD_ACTIONS": json.dumps({"wipe": {"argv": ["echo", "wiped"], "confirm": True}}),
    }).start()
    yield srv
    srv.stop()


def _emit(*writes: str) -> list[str]:
    """argv of the emit.py helper: exact bytes to stdout/stderr (see tests/helpers/emit.py)."""
    return [PYTHON, helper("emit.py"), *writes]


def _run(server, run_id: str) -> dict:
    return httpx.get(server.url(f"/runs/{run_id}"), timeout=10).json()


def _prefixed(*lines: bytes) -> bytes:
    return b"".join(HOST.encode() + b" | " + line for line in lines)


def test_hosts_lists_this_host_up(server):
    result = client(server, "hosts")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["NAME", "STATE", "JOBS", "LOAD", "HEARTBEAT", "TAGS"]
    assert lines[1].split()[:2] == [HOST, "up"] and lines[1].endswith("  web,eu")


def test_a_run_prints_each_line_prefixed_stderr_to_stderr_and_exits_0(server):
    argv = _emit("out:" + b"one\ntw".hex() + ":0.2", "err:" + b"warn\n".hex() + ":0.2", "out:" + b"o\n".hex(),
                 "out:" + b"no newline".hex())
    result = client(server, "run", "--hosts", HOST, "--", *argv)
    assert result.returncode == 0, result.stderr
    # The unfinished line "tw" waits for its end, and the last line, never ended, is ended at the host's end.
    assert result.stdout == _prefixed(b"one\n", b"two\n", b"no newline\n")
    assert result.stderr == _prefixed(b"warn\n")  # piped: no colour, and no notes without -v


def test_a_failure_exits_1_with_the_table_and_runs_shows_it(server):
    result = client(server, "run", "-v", "--hosts", HOST, "--", "ls", "/nonexistent-dir")
    assert result.returncode == 1
    err = result.stderr.decode().splitlines()
    assert err[-2:] == ["HOST          STATE   EXIT", f"{HOST}  failed  2"]
    started = next(line for line in err if line.startswith("sse-commander: run ") and " started on " in line)
    run_id = started.split()[2]
    assert f"sse-commander: run {run_id} failed: 0 of 1 hosts succeeded; not: {HOST}" in err
    assert _run(server, run_id)["state"] == "failed"
    shown = client(server, "runs", run_id)
    assert shown.returncode == 0
    assert shown.stdout.decode().splitlines() == [
        f"run {run_id} failed: {_run(server, run_id)['command']}", "HOST          STATE   EXIT", f"{HOST}  failed  2",
    ]


def test_merge_stderr_and_a_confirmed_action_as_for_one_job(server):
    script = "import os; [os.write(n % 2 + 1, b'%d\\n' % n) for n in range(4)]"  # 0 out, 1 err, 2 out, 3 err
    merged = client(server, "run", "--merge-stderr", "--hosts", HOST, "--", PYTHON, "-c", script)
    assert (merged.returncode, merged.stderr) == (0, b"")
    assert merged.stdout == _prefixed(b"0\n", b"1\n", b"2\n", b"3\n")
    unconfirmed = client(server, "run", "--hosts", HOST, "--action", "wipe")
    assert (unconfirmed.returncode, unconfirmed.stdout) == (255, b"")
    assert unconfirmed.stderr == b"sse-commander: action 'wipe' must be confirmed: run it again with --yes\n"
    confirmed = client(server, "run", "--yes", "--hosts", HOST, "--action", "wipe")
    assert (confirmed.returncode, confirmed.stdout) == (0, _prefixed(b"wiped\n"))


def test_tags_select_hosts_and_a_bad_target_is_refused_in_one_line(server):
    tagged = client(server, "run", "--tags", "db,eu", "--parallel", "1", "--stop-on-failure", "--detach",
                    "--", "echo", "hi")
    run_id = tagged.stdout.decode().strip()
    assert wait_until(lambda: _run(server, run_id)["state"] == "succeeded", 15)
    shown = _run(server, run_id)
    assert (shown["parallel"], shown["stop_on_failure"], [h["host"] for h in shown["hosts"]]) == (1, True, [HOST])
    unknown = client(server, "run", "--hosts", "no-such-host", "--", "true")
    assert unknown.returncode == 255 and unknown.stdout == b""
    assert unknown.stderr.startswith(b"sse-commander: ") and b"(400)" in unknown.stderr
    untagged = client(server, "run", "--tags", "nobody-has-this-tag", "--", "true")
    assert untagged.returncode == 255 and b"(400)" in untagged.stderr


def test_detach_prints_the_run_id_and_runs_follow_replays_it(server):
    detached = client(server, "run", "--detach", "--hosts", HOST, "--", "seq", "3")
    assert detached.returncode == 0, detached.stderr
    run_id = detached.stdout.decode().strip()
    assert wait_until(lambda: _run(server, run_id)["state"] != "running", 15)
    followed = client(server, "runs", "--follow", run_id)
    assert (followed.returncode, followed.stdout) == (0, _prefixed(b"1\n", b"2\n", b"3\n"))
    assert followed.stderr == b""


def test_a_run_through_a_proxy_that_cuts_it_prints_everything_once(server):
    script = ("import time\nfor i in range(3000):\n    print(f'line {i:05d}', flush=True)\n"
              "    if i % 100 == 0: time.sleep(0.03)")
    with CuttingProxy(server.port, cuts=[3000, 9000, 20000, 30000]) as proxy:
        result = client(proxy.base_url, "run", "-v", "--hosts", HOST, "--", PYTHON, "-c", script)
    assert result.returncode == 0, result.stderr[-2000:]
    assert proxy.cut >= 3
    assert result.stdout == _prefixed(*(b"line %05d\n" % i for i in range(3000)))
    assert result.stderr.decode().count("; reconnecting in 0.2 s (after event ") == proxy.cut


def test_ctrl_c_cancels_the_run_and_exits_1_with_the_table(server):
    ticker = "import time\nfor i in range(300):\n    print('tick', i, flush=True)\n    time.sleep(0.2)"
    proc = start_client(server, "run", "-v", "--hosts", HOST, "--", PYTHON, "-c", ticker)
    assert read_until(proc.stdout, b"tick 1\n").startswith(_prefixed(b"tick 0\n"))
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=20)
    no_traceback(err)
    assert proc.returncode == 1, err
    text = err.decode()
    run_id = text.split("sse-commander: run ", 1)[1].split()[0]
    assert f"cancelling run {run_id} on every host (Ctrl-C again to detach)" in text
    assert text.splitlines()[-1].split()[:2] == [HOST, "cancelled"]
    assert _run(server, run_id)["state"] == "cancelled"


def test_stderr_is_red_on_a_terminal(server):
    controller, terminal = pty.openpty()
    argv = _emit("out:" + b"plain\n".hex() + ":0.2", "err:" + b"alarm\n".hex())
    proc = subprocess.Popen([CLIENT, "run", "--hosts", HOST, "--", *argv], env=client_env(server),
                            stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    shown = read_until(controller, b"\0never\0")  # to the end: EIO once the client has closed the terminal
    os.close(controller)
    assert proc.wait(15) == 0
    no_traceback(shown)
    assert f"{HOST} | plain\r\n".encode() in shown
    assert f"{HOST} | \x1b[31malarm\x1b[0m\r\n".encode() in shown


def test_a_closed_stdout_cancels_the_run_it_started(server):
    proc = subprocess.Popen([CLIENT, "run", "-v", "--hosts", HOST, "--", "yes"], env=client_env(server),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = _prefixed(b"y\n")
    assert proc.stdout.read(len(first)) == first
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(15) == 128 + signal.SIGPIPE
    no_traceback(err)
    run_id = err.decode().split("sse-commander: run ", 1)[1].split()[0]
    assert wait_until(lambda: _run(server, run_id)["state"] != "running", 15)
    assert _run(server, run_id)["state"] == "cancelled"


def test_runs_without_an_id_lists_the_newest_runs_first(server):
    ids = []
    for word in ("first", "second"):
        detached = client(server, "run", "--detach", "--hosts", HOST, "--", "echo", word)
        assert detached.returncode == 0, detached.stderr
        ids.append(detached.stdout.decode().strip())
        assert wait_until(lambda: _run(server, ids[-1])["state"] != "running", 15)
    listed = client(server, "runs")
    assert (listed.returncode, listed.stderr) == (0, b""), listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "STATE", "HOSTS", "USER", "CREATED", "COMMAND"]
    # Newest first: the second run, then the first (the module's earlier runs after them).
    assert [line.split()[0] for line in lines[1:3]] == [ids[1], ids[0]]
    cells = lines[1].split()
    assert cells[1:4] == ["succeeded", "1/1", "ok"] and cells[-2:] == ["echo", "second"]
    assert lines[0].index("COMMAND") == lines[1].index("echo second")
    one = client(server, "runs", "--limit", "1")
    assert one.returncode == 0 and one.stdout.decode().splitlines() == [lines[0], lines[1]]
    as_json = client(server, "runs", "--json", "--limit", "2")
    assert (as_json.returncode, as_json.stderr) == (0, b"")
    runs = [json.loads(line) for line in as_json.stdout.decode().splitlines()]
    assert runs == [_run(server, ids[1]), _run(server, ids[0])]  # each as GET /runs/<id> gives it
    assert runs[0]["command"] == "echo second" and runs[0]["hosts"][0]["state"] == "succeeded"
    # runs ID is as it was.
    shown = client(server, "runs", ids[0])
    assert shown.returncode == 0 and shown.stdout.decode().splitlines()[0] == f"run {ids[0]} succeeded: echo first"


def test_runs_follow_without_an_id_is_a_usage_error(server):
    result = client(server, "runs", "--follow")
    assert (result.returncode, result.stdout) == (255, b"")
    assert b"Usage: sse-commander runs [OPTIONS] [ID]" in result.stderr
    assert b"--follow needs the run's ID" in result.stderr
    bad = client(server, "runs", "--limit", "0")
    assert bad.returncode == 255 and b"0 is not in the range 1<=x<=200" in bad.stderr
