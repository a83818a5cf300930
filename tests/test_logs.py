"""log_format = "json" on a real gunicorn: the access, app and audit logs as JSON lines, tied by X-Request-ID."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from .server import GunicornServer, wait_until

PROXY_ID = "proxy-id.42:abc"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("json-logs")
    audit = tmp / "audit.log"
    settings = {
        "SSECMD_LOG_FORMAT": "json",
        "SSECMD_AUDIT_LOG": str(audit),
        "SSECMD_TRUSTED_PROXIES": "127.0.0.1",  # the tests' requests come from a trusted proxy
        "SSECMD_HEARTBEAT_INTERVAL": "1",
        "SSECMD_SEND_TIMEOUT": "1",
    }
    server = GunicornServer(tmp, settings).start()
    server.audit = audit
    # Alice, as the trusted proxy (the tests' loopback address) says; same-origin, as the browser rules want.
    server.http = httpx.Client(base_url=server.base_url, timeout=10,
                               headers={"X-Forwarded-User": "alice", "Origin": server.base_url})
    yield server
    server.http.close()
    server.stop()


def lines(srv: GunicornServer) -> list[dict]:
    """Every line gunicorn and the audit log have written, each parsed as JSON (one that is not fails)."""
    text = srv.log() + srv.audit.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def for_request(srv: GunicornServer, request_id: str, logger: str | None = None) -> list[dict]:
    return [e for e in lines(srv) if e.get("request_id") == request_id and logger in (None, e["logger"])]


def test_a_proxys_request_id_is_kept_in_the_answer_the_job_and_every_log_line(srv):
    response = srv.http.post("/jobs", json={"argv": ["echo", "hi"]}, headers={"X-Request-ID": PROXY_ID})
    assert response.status_code == 201
    assert response.headers["X-Request-ID"] == PROXY_ID
    job = response.json()
    assert job["request_id"] == PROXY_ID
    assert wait_until(lambda: any(e.get("audit") == "job_end" for e in for_request(srv, PROXY_ID)), 10)
    (access,) = for_request(srv, PROXY_ID, "access")
    assert {k: access[k] for k in ("level", "user", "method", "path", "status")} == {
        "level": "info", "user": "alice", "method": "POST", "path": "/jobs", "status": 201}
    assert access["bytes"] == len(response.content) and 0 < access["duration"] < 10
    assert access["timestamp"].endswith("+00:00")
    audits = {e["audit"]: e for e in for_request(srv, PROXY_ID, "audit")}
    assert set(audits) == {"job_start", "job_end"} and audits["job_end"]["job"] == job["id"]
    assert srv.http.get(f"/jobs/{job['id']}").json()["request_id"] == PROXY_ID


def test_every_line_is_json_with_the_common_fields(srv):
    srv.http.get("/healthz")
    entries = lines(srv)  # fails on any line that is not JSON
    assert {"gunicorn.error", "app", "access", "audit"} <= {e["logger"] for e in entries}
    for entry in entries:
        assert {"timestamp", "level", "logger", "request_id"} <= set(entry), entry


def test_a_stream_logs_how_it_ended_and_what_it_sent(srv):
    job = srv.http.post("/jobs", json={"argv": ["seq", "3"]}).json()
    assert wait_until(lambda: srv.http.get(f"/jobs/{job['id']}").json()["ended_at"], 10)  # replayed, not live
    events = srv.http.get(f"/jobs/{job['id']}/events")
    rid = events.headers["X-Request-ID"]
    assert wait_until(lambda: for_request(srv, rid, "access"), 10)
    (finished,) = for_request(srv, rid, "access")
    assert finished["stream"] == {"kind": "job", "ended": "finished"}
    assert finished["bytes"] == len(events.content)

    running = srv.http.post("/jobs", json={"argv": ["sleep", "30"]}).json()
    with httpx.stream("GET", srv.url(f"/jobs/{running['id']}/events"), timeout=10,
                      headers={"X-Forwarded-User": "alice"}) as stream:
        rid = stream.headers["X-Request-ID"]
        next(stream.iter_bytes())  # connected; then the client leaves
    assert wait_until(lambda: for_request(srv, rid, "access"), 10)
    (left,) = for_request(srv, rid, "access")
    assert left["stream"] == {"kind": "job", "ended": "client_left"} and left["status"] == 200
    assert left["bytes"] > 0
    srv.http.delete(f"/jobs/{running['id']}")


def test_a_client_that_stops_reading_is_dropped_logged_and_counted(srv):
    def drops() -> float:
        text = srv.http.get("/metrics").text  # a loopback peer: in metrics_allow
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("ssecmd_slow_subscriber_drops_total"))

    before = drops()
    with socket.create_connection(("127.0.0.1", srv.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /run?command=yes HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nX-Forwarded-User: alice\r\n"
                     f"Origin: {srv.base_url}\r\nX-Request-ID: stalled-1\r\n\r\n".encode())
        # ... and never reads: after send_timeout (1 s) the stream is dropped.
        assert wait_until(lambda: for_request(srv, "stalled-1", "access"), 20)
    (access,) = for_request(srv, "stalled-1", "access")
    assert access.get("stream") == {"kind": "run", "ended": "slow_client"}, json.dumps(access)
    assert drops() == before + 1
