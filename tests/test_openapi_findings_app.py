"""What schemathesis found against the contract (tests/test_openapi_fuzz.py), each kept as a regression test.

In-process (tests/app_client.py): wrong or hostile requests get a 4xx with the documented JSON error,
never a 500, a traceback or a success.
"""

from __future__ import annotations

import json

import pytest

from app.policy.access import hash_token, new_token

from .app_client import AppClient, app_client


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> AppClient:
    return app_client(tmp_path_factory.mktemp("openapi-findings"))


def assert_error(answer, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    body = answer.json()
    assert body["error"] == code and isinstance(body["message"], str), body


@pytest.mark.parametrize("query", ["", "?timeout=", "?command=echo&timeout=x", "?command=echo&timeout=0"])
def test_run_reconnect_with_a_malformed_request_is_a_400_not_a_204(client, query):
    """A Last-Event-ID made /run answer 204 before its query was read, so garbage was "accepted"."""
    answer = client.get(f"/run{query}", headers={"Last-Event-ID": "3"})
    assert_error(answer, 400, "bad_request")


def test_a_malformed_last_event_id_query_is_a_400_even_when_the_header_wins(client):
    """The header wins over ?last_event_id=, but a garbage query value used to be ignored (a 200 or 204)."""
    job = client.finished_job(["echo", "hi"], output=b"hi\n")
    answer = client.get(f"/jobs/{job.id}/events?last_event_id=%C2%97x", headers={"Last-Event-ID": "1"})
    assert_error(answer, 400, "bad_request")
    answer = client.get("/channels/ops/events?last_event_id=not-an-id!", headers={"Last-Event-ID": ""})
    assert_error(answer, 400, "bad_request")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> AppClient:
    """An app with authentication on: requests without credentials."""
    tokens = [{"user": "alice", "roles": ["admin"], "hash": hash_token(new_token())}]
    return app_client(tmp_path_factory.mktemp("openapi-findings-auth"), {"SSECMD_TOKENS": json.dumps(tokens)})


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/healthz", "GET, HEAD, OPTIONS"),
        ("PUT", "/login", "OPTIONS, POST"),
        ("PATCH", "/", "GET, HEAD, OPTIONS"),
        ("DELETE", "/openapi.json", "GET, HEAD, OPTIONS"),
        ("PUT", "/jobs", "GET, HEAD, OPTIONS, POST"),
    ],
)
def test_a_method_a_path_does_not_have_is_a_405_without_credentials_too(guarded, method, path, allow):
    """Without credentials, an undeclared method got 401 (even on public paths such as /healthz), not 405."""
    answer = guarded.request(method, path)
    assert_error(answer, 405, "method_not_allowed")
    assert sorted(answer.headers["Allow"].split(", ")) == sorted(allow.split(", "))


def test_an_unknown_path_is_a_404_without_credentials_too(guarded):
    assert_error(guarded.get("/no/such/path"), 404, "not_found")


@pytest.mark.parametrize("event", ["reset", "busy"])
def test_a_publisher_cannot_send_the_servers_own_channel_events(client, event):
    """A channel stream's `reset` and `busy` events have shapes of their own (the contract's ChannelStreamEvent);
    a message published as one passed for the server's (`sse-commander tail` printed a spoofed "history
    started again" notice)."""
    answer = client.post("/channels/ops/messages", json={"data": {"missed": "unknown"}, "event": event})
    assert_error(answer, 400, "bad_message")


def test_a_malformed_composite_last_event_id_query_is_a_400_even_when_the_header_wins(client):
    job = client.finished_job(["echo", "hi"])  # start (1) and exit (2)
    path = f"/events?job={job.id}&last_event_id=not-a-cursor"
    assert_error(client.get(path, headers={"Last-Event-ID": f"job:{job.id}=2"}), 400, "bad_request")
    assert client.get(f"/events?job={job.id}", headers={"Last-Event-ID": f"job:{job.id}=2"}).status_code == 204
