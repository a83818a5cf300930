"""Malformed and hostile requests against the real gunicorn server: what only it can show.

House rule: every one gets a 4xx with a JSON body ``{"error": code, "message": reason}``
(never a 500, HTML or a traceback), starts nothing, and the service keeps serving
with everything it already stored. Tests run in file order: a baseline job is
created first and checked intact by the last test. Here: gunicorn's own
refusals and raw sockets, chunked bodies, and a job that really ran; the
validation cases the app answers by itself run in-process in
tests/test_bad_input_app.py.
"""

from __future__ import annotations

import json

import httpx
import pytest

from .raw_http import RawResponse, raw_request, request_bytes
from .sse_client import collect, output_of

BASELINE_ARGV = ["printf", "%s\\n", "baseline output", "kept ; $(id) \u00e9"]
BASELINE_OUTPUT = "baseline output\nkept ; $(id) \u00e9\n".encode()
JSON = {"Content-Type": "application/json"}


# Checking answers.


def _parts(response: httpx.Response | RawResponse) -> tuple[int, str, bytes]:
    if isinstance(response, RawResponse):
        return response.status, response.headers.get("content-type", ""), response.body
    return response.status_code, response.headers.get("content-type", ""), response.content


def assert_not_leaky(body: bytes) -> None:
    """No traceback and no HTML page, whatever the status."""
    text = body.decode("utf-8", "replace")
    assert "Traceback" not in text, text[:500]
    assert "<html" not in text.lower() and "<!doctype" not in text.lower(), text[:500]


def assert_json_error(
    response: httpx.Response | RawResponse, status: int, code: str | None = None, message: str | None = None
) -> dict:
    """``response`` is ``status`` with a JSON error object; returns the object."""
    got, content_type, body = _parts(response)
    assert_not_leaky(body)
    assert got == status, (got, body[:300])
    assert content_type.startswith("application/json"), (content_type, body[:300])
    data = json.loads(body)
    assert isinstance(data, dict), data
    assert isinstance(data.get("error"), str) and data["error"], data
    assert isinstance(data.get("message"), str) and data["message"], data
    if code is not None:
        assert data["error"] == code, data
    if message is not None:
        assert message in data["message"], data
    return data


# Fixtures.


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(10, connect=5)) as c:
        yield c


@pytest.fixture(scope="module", autouse=True)
def baseline(client) -> dict:
    """A finished job created before any hostile request; the last test checks it survived intact."""
    response = client.post("/jobs", json={"argv": BASELINE_ARGV})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    output = client.get(f"/jobs/{job_id}/output")  # streams until the job ends
    assert output.content == BASELINE_OUTPUT
    job = client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "exited" and job["exit_code"] == 0, job
    return job


def test_oversized_chunked_body_is_413_json_not_truncated(client):
    # Valid JSON followed by whitespace: truncated at the limit it would still parse and start a job.
    body = b'{"command": "echo truncated"}' + b" " * 70000

    def chunks():
        yield body[:30000]
        yield body[30000:]

    assert_json_error(client.post("/jobs", content=chunks(), headers=JSON), 413)


def test_declared_huge_content_length_is_413_json_before_the_body(server):
    data = request_bytes("POST", b"/jobs", {"Content-Type": b"application/json", "Content-Length": b"1000000000"})
    assert_json_error(raw_request(server.port, data), 413)


def test_non_utf8_json_body_over_a_raw_socket_is_400_json(server):
    body = b'{"argv": ["echo", "\xff\xfe"]}'
    data = request_bytes(
        "POST", b"/jobs", {"Content-Type": b"application/json", "Content-Length": str(len(body)).encode()}, body
    )
    assert_json_error(raw_request(server.port, data), 400, "bad_json", "not valid UTF-8")


# Smaller limits, so each can be hit through /run too (the default command length does not fit in a URL).


def test_configured_limits_are_400_and_413_json_on_run_and_jobs(make_server):
    srv = make_server(
        {"SSECMD_MAX_COMMAND_LENGTH": "32", "SSECMD_MAX_ARGV_ITEMS": "4", "SSECMD_MAX_BODY_BYTES": "512"}
    )
    with httpx.Client(base_url=srv.base_url, timeout=10) as c:
        too_long = "echo " + "a" * 28
        assert_json_error(c.get("/run", params={"command": too_long}), 400, "bad_request", "longer than 32")
        assert_json_error(c.get("/run", params={"command": "echo a b c d"}), 400, "bad_request", "more than 4 items")
        assert_json_error(c.post("/jobs", json={"command": too_long}), 400, "bad_request", "longer than 32")
        assert_json_error(c.post("/jobs", json={"argv": ["echo", "a" * 30]}), 400, "bad_request", "longer than 32")
        assert_json_error(c.post("/jobs", json={"argv": ["echo"] * 5}), 400, "bad_request", "more than 4 items")

        # Exactly at the body limit parses (403: rm is not allowed); one byte more is 413, chunked or not.
        at_limit = b'{"command": "rm x"}'.ljust(512, b" ")
        over = at_limit + b" "
        assert_json_error(c.post("/jobs", content=at_limit, headers=JSON), 403, "command_not_allowed")
        assert_json_error(c.post("/jobs", content=iter([at_limit]), headers=JSON), 403, "command_not_allowed")
        assert_json_error(c.post("/jobs", content=over, headers=JSON), 413)
        assert_json_error(c.post("/jobs", content=iter([over[:300], over[300:]]), headers=JSON), 413)

        assert c.get("/jobs").json()["jobs"] == []
        assert c.get("/healthz").status_code == 200


def test_non_ascii_last_event_id_over_a_raw_socket_is_400_json(server, baseline):
    data = request_bytes("GET", f"/jobs/{baseline['id']}/events".encode(), {"Last-Event-ID": b"\xff\xfe\x80"})
    assert_json_error(raw_request(server.port, data), 400, "bad_request", "must be ASCII")


# What gunicorn rejects before the app sees it must be JSON too.


@pytest.mark.parametrize(
    "data",
    [
        request_bytes("GET", b"/run?command=echo%20\xff"),
        request_bytes("GET", b"/run?command=echo\x00x"),
        request_bytes("GET", b"/jobs/\xff"),
        request_bytes("GET", b"/jobs", {"Last-Event-ID": b"1" * 9000}),
        request_bytes("POST", b"/jobs", {"Content-Type": b"application/json", "Content-Length": b"-1"}),
    ],
    ids=["raw-ff-in-query", "raw-nul-in-query", "raw-ff-in-path", "huge-header", "negative-content-length"],
)
def test_requests_gunicorn_rejects_get_json_errors(server, data):
    response = raw_request(server.port, data)
    assert 400 <= response.status < 500
    assert_json_error(response, response.status)


# Last, in file order: after everything above, the service still serves and lost nothing.


def test_zz_still_healthy_nothing_started_nothing_lost(server, client, baseline):
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["running_jobs"] == 0

    jobs = client.get("/jobs").json()["jobs"]
    assert [job["id"] for job in jobs] == [baseline["id"]], "a rejected request started a job"
    assert jobs[0] == baseline

    assert client.get(f"/jobs/{baseline['id']}/output").content == BASELINE_OUTPUT
    events = collect(server.url(f"/jobs/{baseline['id']}/events"))
    assert output_of(events) == BASELINE_OUTPUT.decode()
    assert events[-1].type == "exit"

    log = server.log()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
