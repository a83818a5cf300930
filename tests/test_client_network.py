"""The client across network drops: a proxy started here cuts its connections mid-stream, or answers 503."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest

from .client_support import CuttingProxy, canned_answer, client, read_until, start_client
from .server import PYTHON, GunicornServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Small events (4 KiB), a short retry: delay and a heartbeat every second."""
    srv = GunicornServer(tmp_path_factory.mktemp("network"), {
        "SSECMD_RETRY_MS": "200", "SSECMD_READ_CHUNK_BYTES": "4096", "SSECMD_COALESCE_BYTES": "4096",
        "SSECMD_HEARTBEAT_INTERVAL": "1",
    }).start()
    yield srv
    srv.stop()


def _lines(count: int, every: int = 100, pause: float = 0.05) -> tuple[list[str], bytes]:
    """argv of a job that prints numbered lines, pausing now and then, and the bytes it prints."""
    script = (f"import time\nfor i in range({count}):\n    print(f'line {{i:05d}}', flush=True)\n"
              f"    if i % {every} == 0: time.sleep({pause})")
    return [PYTHON, "-c", script], b"".join(b"line %05d\n" % i for i in range(count))


def _resumed_from(proxy: CuttingProxy) -> list[str]:
    """The Last-Event-ID each connection to the proxy sent (None: from the start)."""
    found = []
    for request in proxy.requests:
        headers = dict(line.split(": ", 1) for line in request.decode().split("\r\n")[1:] if ": " in line)
        found.append({k.lower(): v for k, v in headers.items()}.get("last-event-id"))
    return found


def test_run_through_a_proxy_that_cuts_it_five_times_prints_everything_once(server):
    argv, expected = _lines(4000)  # 44,000 bytes over about two seconds
    with CuttingProxy(server.port, cuts=[3000, 4000, 7000, 9000, 12000]) as proxy:
        result = client(proxy.base_url, "run", "-v", "--", *argv)
    assert result.returncode == 0, result.stderr
    assert proxy.cut == 5
    assert result.stdout == expected
    notes = result.stderr.decode()
    # The server's retry: 200 is honoured: each first reconnect waits 0.2 s, and says from where it resumes.
    assert notes.count("; reconnecting in 0.2 s (after event ") == 5, notes
    resumed = [value for value in _resumed_from(proxy) if value is not None]
    assert len(resumed) == 5 and [int(v) for v in resumed] == sorted(int(v) for v in resumed)


def test_attach_to_a_finished_job_through_cuts_replays_everything_once(server):
    job_id = client(server, "run", "--detach", "--", "seq", "30000").stdout.decode().strip()
    client(server, "attach", job_id)  # to its end
    expected = b"".join(b"%d\n" % n for n in range(1, 30001))
    with CuttingProxy(server.port, cuts=[3000, 20000, 50000, 90000]) as proxy:
        result = client(proxy.base_url, "attach", job_id)
    assert result.returncode == 0 and result.stderr == b""
    assert proxy.cut == 4
    assert result.stdout == expected


def test_a_503_is_retried_after_its_retry_after(server):
    job_id = client(server, "run", "--detach", "--", "echo", "behind a proxy").stdout.decode().strip()
    unavailable = canned_answer(503, "Service Unavailable", b'{"error": "upstream", "message": "restarting"}',
                                [("Retry-After", "1")])
    with CuttingProxy(server.port, canned={0: unavailable, 1: unavailable}) as proxy:
        result = client(proxy.base_url, "attach", "-v", job_id)
    assert result.returncode == 0 and result.stdout == b"behind a proxy\n"
    assert result.stderr.decode().count("the server answered 503; reconnecting in 1.0 s") == 2
    assert proxy.connections == 3


def test_any_other_4xx_is_final_even_while_reconnecting(server):
    argv, expected = _lines(2000)
    job_id = client(server, "run", "--detach", "--", *argv).stdout.decode().strip()
    gone = canned_answer(410, "Gone", json.dumps({"error": "gone", "message": "this stream is gone"}).encode())
    with CuttingProxy(server.port, cuts=[3000], canned={1: gone}) as proxy:
        result = client(proxy.base_url, "attach", job_id)
    assert result.returncode == 255
    assert result.stderr.decode().splitlines()[-1] == "sse-commander: this stream is gone (410)"
    assert proxy.connections == 2  # no attempt after the 410
    assert expected.startswith(result.stdout) and result.stdout  # what came before the cut, once
    assert client(server, "cancel", job_id).returncode in (0, 255)


def test_reconnecting_gives_up_after_the_reconnect_timeout(server):
    argv, _ = _lines(100000, every=1000, pause=0.2)
    job_id = client(server, "run", "--detach", "--", *argv).stdout.decode().strip()
    with CuttingProxy(server.port, cuts=[3000], max_connections=1) as proxy:
        result = client(proxy.base_url, "attach", "--reconnect-timeout", "1", job_id)
    assert result.returncode == 255
    last = result.stderr.decode().splitlines()[-1]
    assert last.startswith(f"sse-commander: cannot connect to {proxy.base_url}: connection refused")
    assert last.endswith("; gave up reconnecting after 1 s")
    assert client(server, "cancel", job_id).returncode == 0


def test_heartbeats_make_no_phantom_messages_in_tail(server):
    """httpx-sse yields an empty event for every heartbeat after an id (its issue #35): none may show."""
    proc = start_client(server, "tail", "phantoms")
    httpx.post(server.url("/channels/phantoms/messages"), json={"data": "one"}).raise_for_status()
    assert read_until(proc.stdout, b"one\n") == b"one\n"
    time.sleep(2.5)  # two heartbeats, at least
    httpx.post(server.url("/channels/phantoms/messages"), json={"data": {"n": 2}, "event": "notice"})
    assert read_until(proc.stdout, b"}\n") == b'{"n": 2}\n'
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert out == b"" and err == b"" and proc.returncode == 130
