"""What schemathesis found against the contract (tests/test_openapi_fuzz.py), each kept as a regression test.

In-process (tests/app_client.py): wrong or hostile requests get a 4xx with the documented JSON error,
never a 500, a traceback or a success.
"""

from __future__ import annotations

import pytest

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
