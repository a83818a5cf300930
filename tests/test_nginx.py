"""deploy/nginx.conf in front of the real gunicorn server, with a real nginx.

The shipped file is what gets tested: it is read, and only three clearly
recognisable active lines are rewritten (the upstream address, the listen
address and the streams' proxy_read_timeout), then included in a minimal
nginx.conf that keeps everything (pid, logs, temp files) in a tmp directory.
The wrapper also sets ``proxy_ignore_headers X-Accel-Buffering`` so that the
app's own ``X-Accel-Buffering: no`` cannot hide a location that buffers: the
streaming has to come from the shipped config alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from .auth_support import Credentials
from .server import (
    PYTHON,
    REPO,
    GunicornServer,
    free_port,
    group_members,
    helper,
    process_state,
    wait_healthy,
    wait_until,
)
from .sse_client import collect, iter_events, open_stream, output_of, payload

SHIPPED = REPO / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
READ_TIMEOUT = 2  # seconds: nginx's proxy_read_timeout in the tests; the server's heartbeat is 1 s
SSE_LOCATIONS = ("= /run", r"~ ^/jobs/[^/]+/(events|output)$", r"~ ^/runs/[^/]+/events$", "/events", "/channels/")

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make test installs the Debian nginx-light)"),
]


def site_config(upstream_port: int, listen_port: int, read_timeout: int, sso_user: str | None = None,
                per_client: int | None = None) -> str:
    """The shipped deploy/nginx.conf with the upstream, listen address and stream timeouts replaced.

    ``sso_user`` stands in for an auth_request SSO set-up: the proxy names this user itself.
    ``per_client`` replaces the limit of concurrent requests per client address.
    """
    text = SHIPPED.read_text()
    rewrites = [
        # (pattern on an active line, replacement, how many lines must match)
        (r"^(\s*server\s+)127\.0\.0\.1:8000;", rf"\g<1>127.0.0.1:{upstream_port};", 1),
        (r"^(\s*listen\s+)80;", rf"\g<1>127.0.0.1:{listen_port};", 1),
        (r"^(\s*proxy_read_timeout\s+)1h;", rf"\g<1>{read_timeout}s;", len(SSE_LOCATIONS)),
    ]
    if sso_user is not None:
        rewrites.append((r'^(\s*proxy_set_header\s+X-Forwarded-User\s+)"";', rf'\g<1>"{sso_user}";', 1))
    if per_client is not None:
        rewrites.append((r"^(\s*limit_conn\s+sse_commander_per_client\s+)\d+;", rf"\g<1>{per_client};", 1))
    for pattern, replacement, expected in rewrites:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == expected, f"deploy/nginx.conf changed shape: {pattern!r} matched {count} lines, not {expected}"
    return text


def main_config(tmp: Path, site: Path, *, ignore_accel_buffering: bool = True) -> str:
    """A minimal, self-contained nginx.conf that includes ``site``."""
    # As root, nginx's workers would switch to "nobody", who cannot enter pytest's 0700 tmp directories.
    user = "user root;" if os.geteuid() == 0 else ""
    ignore = "proxy_ignore_headers X-Accel-Buffering;" if ignore_accel_buffering else ""
    return f"""
daemon off;
master_process on;
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body_temp;
    proxy_temp_path {tmp}/proxy_temp;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;
    {ignore}
    include {site};
}}
"""


def nginx_test(conf: Path, tmp: Path) -> subprocess.CompletedProcess:
    """``nginx -t`` on a config file."""
    return subprocess.run(
        [NGINX, "-t", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)],
        capture_output=True, text=True, timeout=30,
    )


class NginxServer:
    """One nginx master (daemon off) proxying to a gunicorn server; stopped by pid."""

    def __init__(self, tmp: Path, upstream_port: int, read_timeout: int = READ_TIMEOUT,
                 sso_user: str | None = None, per_client: int | None = None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.site = tmp / "site.conf"
        self.site.write_text(site_config(upstream_port, self.port, read_timeout, sso_user, per_client))
        self.conf = tmp / "nginx.conf"
        self.conf.write_text(main_config(tmp, self.site))
        self.proc: subprocess.Popen | None = None

    def check(self) -> None:
        result = nginx_test(self.conf, self.tmp)
        assert result.returncode == 0, f"nginx -t failed:\n{result.stderr}\n{self.site.read_text()}"

    def start(self) -> NginxServer:
        self.check()
        self._out = open(self.tmp / "nginx.out", "ab")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.tmp), "-e", str(self.tmp / "error.log"), "-c", str(self.conf)],
            stdout=self._out, stderr=subprocess.STDOUT,
        )
        try:
            wait_healthy(self.proc, self.url("/healthz"), 10, "nginx", self.log)
        except RuntimeError:
            self.stop()
            raise
        return self

    def url(self, path: str) -> str:
        return self.base_url + path

    def log(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.tmp / "nginx.out", self.tmp / "error.log") if p.exists()]
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: open streams are cut
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


@pytest.fixture(scope="module")
def nginx(server, tmp_path_factory):
    """nginx with the shipped site config in front of the module's gunicorn server (heartbeat 1 s)."""
    proxy = NginxServer(tmp_path_factory.mktemp("nginx"), server.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def quiet_nginx(tmp_path_factory):
    """nginx in front of a gunicorn server whose heartbeat (30 s) never fires during a test.

    A disconnect then cannot be noticed through a failed heartbeat write: the
    command dies quickly only if nginx itself sees the client leave and closes
    its upstream connection, i.e. only with proxy_ignore_client_abort off.
    """
    backend = GunicornServer(tmp_path_factory.mktemp("quiet-server"), {"SSECMD_HEARTBEAT_INTERVAL": "30"}).start()
    try:
        proxy = NginxServer(tmp_path_factory.mktemp("quiet-nginx"), backend.port, read_timeout=60).start()
        try:
            yield proxy
        finally:
            proxy.stop()
    finally:
        backend.stop()


def run_url(proxy: NginxServer, command: str) -> str:
    return proxy.url("/run?command=" + quote(command))


def strip_comments(text: str) -> str:
    return re.sub(r"#[^\n]*", "", text)


# The shipped file itself.


def test_shipped_file_passes_nginx_t_unmodified(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(main_config(tmp_path, SHIPPED, ignore_accel_buffering=False))
    result = nginx_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr


def test_shipped_file_has_the_sse_directives():
    text = strip_comments(SHIPPED.read_text())
    locations = dict(re.findall(r"location\s+([^{]+?)\s*\{([^}]*)\}", text))
    assert set(SSE_LOCATIONS) <= set(locations), sorted(locations)
    for name in SSE_LOCATIONS:
        directives = {" ".join(line.split()) for line in locations[name].split(";")}
        assert {"proxy_buffering off", "gzip off", "proxy_read_timeout 1h"} <= directives, name
        assert "proxy_pass http://sse_commander" in directives, name
    server_level = re.sub(r"location\s+[^{]+\{[^}]*\}", "", text)
    for directive in (
        r"proxy_http_version\s+1\.1;",
        r"proxy_cache\s+off;",
        r"proxy_ignore_client_abort\s+off;",
        r"proxy_set_header\s+X-Forwarded-For\s+\$proxy_add_x_forwarded_for;",
        r"proxy_set_header\s+X-Forwarded-Proto\s+\$scheme;",
        r'proxy_set_header\s+X-Forwarded-User\s+"";',
        r'proxy_set_header\s+X-Forwarded-Roles\s+"";',
        r"limit_conn\s+sse_commander_per_client\s+\d+;",
        r"client_header_timeout\s+10s;",
        r"client_body_timeout\s+10s;",
    ):
        assert re.search(directive, server_level), directive
    # A location with its own proxy_set_header would silently drop the server-level ones.
    assert not any("proxy_set_header" in body for body in locations.values())
    assert not re.search(r"proxy_ignore_client_abort\s+on", text)
    assert "http2 on;" in SHIPPED.read_text()  # documented (commented out: needs TLS and nginx >= 1.25.1)


# Live, through nginx.


def test_metrics_are_not_proxied(nginx, server):
    # Through nginx every client is a loopback peer, which metrics_allow trusts: nginx must not pass it on.
    assert httpx.get(server.url("/metrics"), timeout=10).status_code == 200
    for path in ("/metrics", "/metrics?x=1"):
        response = httpx.get(nginx.url(path), timeout=10)
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "not_found"
        assert "ssecmd_" not in response.text


def test_events_arrive_through_nginx_as_they_happen(nginx):
    command = f"{PYTHON} {helper('emit.py')} out:6669727374:2 out:7365636f6e64"
    arrivals = {}
    started = time.monotonic()
    with open_stream(run_url(nginx, command)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert "content-encoding" not in response.headers
        for event in iter_events(response):
            if event.type in ("stdout", "exit"):
                arrivals.setdefault(event.type, (time.monotonic() - started, payload(event)))
            if event.type == "exit":
                break
    first_at, first = arrivals["stdout"]
    exit_at, _ = arrivals["exit"]
    assert first["out"] == "first"
    assert first_at < 1.5, f"first stdout event took {first_at:.2f}s through nginx"
    assert exit_at - first_at > 1.5, "the first event arrived only when the command ended"


def test_idle_stream_outlives_proxy_read_timeout_thanks_to_heartbeats(nginx):
    started = time.monotonic()
    events = collect(run_url(nginx, "sleep 5"), timeout=20)
    elapsed = time.monotonic() - started
    assert [e.type for e in events] == ["start", "exit"]
    assert payload(events[-1])["reason"] == "exited" and payload(events[-1])["code"] == 0
    assert elapsed > 2 * READ_TIMEOUT, "the stream was not idle for longer than proxy_read_timeout"


def test_silent_stream_without_heartbeat_is_cut_at_proxy_read_timeout(nginx):
    """Control for the test above: the 2 s timeout really is in force in the streaming locations.

    /jobs/<id>/output is raw bytes and has no heartbeat, so nginx gives up on it.
    """
    # Prints once (so the headers go out), then stays silent for longer than the timeout.
    created = httpx.post(nginx.url("/jobs"), json={"command": f"{PYTHON} {helper('emit.py')} out:6869:6"}, timeout=10)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    received = []
    started = time.monotonic()
    with (
        contextlib.suppress(httpx.RemoteProtocolError),  # nginx ends the chunked body without its last chunk
        open_stream(nginx.url(f"/jobs/{job_id}/output")) as response,
    ):
        assert response.status_code == 200
        received.extend(response.iter_raw())
    assert b"".join(received) == b"hi"
    elapsed = time.monotonic() - started
    assert READ_TIMEOUT - 0.5 < elapsed < READ_TIMEOUT + 2, f"stream ended after {elapsed:.2f}s"
    assert httpx.get(nginx.url(f"/jobs/{job_id}")).json()["state"] == "running"
    httpx.delete(nginx.url(f"/jobs/{job_id}"), timeout=10)


def test_client_disconnect_at_nginx_kills_run_command_and_grandchild(quiet_nginx):
    pgid = parent = grandchild = None
    with open_stream(run_url(quiet_nginx, f"{PYTHON} {helper('tree.py')}")) as response:
        # Keep a reference: a for loop's own generator, dropped at `break`, would close the connection there.
        events = iter_events(response)
        out = ""
        for event in events:
            if event.type == "start":
                pgid = payload(event)["pid"]
            elif event.type == "stdout":
                out += payload(event)["out"]
                if out.endswith("\n"):
                    break
        label, parent, grandchild = out.split()
        parent, grandchild = int(parent), int(grandchild)
        assert label == "pids"
        assert parent == pgid
        assert {parent, grandchild} <= set(group_members(pgid))
        time.sleep(1)  # a silent stream: the command stays alive as long as the client does
        assert {parent, grandchild} <= set(group_members(pgid))
    closed = time.monotonic()  # leaving the block closed the client's connection to nginx

    assert wait_until(lambda: not group_members(pgid), 2.0), (
        f"group {pgid} still has {[(pid, process_state(pid)) for pid in group_members(pgid)]} "
        f"{time.monotonic() - closed:.2f}s after the client left"
    )
    assert process_state(grandchild) is None


def test_resume_through_nginx_with_last_event_id(nginx):
    steps = [f"out:{f'line {n}'.encode().hex()}:0.05" for n in range(6)]
    created = httpx.post(
        nginx.url("/jobs"), json={"command": f"{PYTHON} {helper('emit.py')} {' '.join(steps)}"}, timeout=10
    )
    assert created.status_code == 201, created.text
    events_url = nginx.url(f"/jobs/{created.json()['id']}/events")

    everything = collect(events_url)
    assert everything[-1].type == "exit"
    assert output_of(everything) == "".join(f"line {n}" for n in range(6))
    ids = [int(e.last_event_id) for e in everything]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert len(everything) >= 4

    def key(events):
        return [(e.last_event_id, e.type, e.data) for e in events]

    middle = len(everything) // 2
    resumed = collect(events_url, headers={"Last-Event-ID": str(ids[middle])})
    assert key(resumed) == key(everything[middle + 1:])
    resumed_by_query = collect(events_url + f"?last_event_id={ids[middle]}")
    assert key(resumed_by_query) == key(everything[middle + 1:])

    after_final = httpx.get(events_url, headers={"Last-Event-ID": str(ids[-1])}, timeout=10)
    assert after_final.status_code == 204
    assert after_final.content == b""


# The user and roles headers: believed by the app from this proxy, so never a client's.


@pytest.fixture(scope="module")
def sso_backend(tmp_path_factory):
    """A server that believes 127.0.0.1's user and roles headers (tokens configured too)."""
    creds = Credentials()
    creds.add_token("someone", ["viewer"])
    settings = {**creds.env(), "SSECMD_TRUSTED_PROXIES": "127.0.0.1", "SSECMD_ROLES_HEADER": "X-Forwarded-Roles",
                "SSECMD_PROXY_ROLES": "runner"}
    backend = GunicornServer(tmp_path_factory.mktemp("sso-server"), settings).start()
    yield backend
    backend.stop()


FORGED = {"X-Forwarded-User": "boss", "X-Forwarded-Roles": "admin"}


def test_a_client_cannot_name_itself_through_nginx(sso_backend, tmp_path):
    # The premise: straight to the app (from the trusted address), the headers would be believed.
    assert httpx.get(sso_backend.url("/whoami"), headers=FORGED).json()["user"] == "boss"
    proxy = NginxServer(tmp_path, sso_backend.port).start()
    try:
        response = httpx.get(proxy.url("/whoami"), headers=FORGED, timeout=10)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "unauthorized"
    finally:
        proxy.stop()


def test_with_sso_the_proxy_names_the_user_and_a_clients_roles_header_is_dropped(sso_backend, tmp_path):
    proxy = NginxServer(tmp_path, sso_backend.port, sso_user="sso-carol").start()
    try:
        me = httpx.get(proxy.url("/whoami"), headers=FORGED, timeout=10).json()
        assert me["user"] == "sso-carol" and me["roles"] == ["runner"] and me["via"] == "proxy", me
    finally:
        proxy.stop()


# Per-client limits: one address cannot hold every connection of the worker's headroom.


def test_one_client_address_holds_at_most_its_share_and_is_told_so_in_json(server, tmp_path):
    proxy = NginxServer(tmp_path, server.port, read_timeout=60, per_client=3).start()
    try:
        with contextlib.ExitStack() as streams:
            readers = []  # kept: a dropped reader closes its response
            for number in range(3):
                response = streams.enter_context(
                    httpx.stream("GET", proxy.url(f"/channels/limit-{number}/events"), timeout=10)
                )
                assert response.status_code == 200
                readers.append(response.iter_bytes())
                next(readers[-1])  # the stream is open: its first frame arrived
            refused = httpx.get(proxy.url("/healthz"), timeout=10)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"] == "too_many_connections"
            assert refused.headers["retry-after"] == "10"
        # The streams are closed: the address has its share back.
        assert wait_until(lambda: httpx.get(proxy.url("/healthz"), timeout=10).status_code == 200, timeout=10)
    finally:
        proxy.stop()
