"""Bad input to the channel endpoints against the real server: bodies only it can cut (chunked), and messages
that must arrive; the validation cases the app answers by itself run in-process (test_channels_input_app.py).
Always a 4xx JSON answer, never a 500, and the server keeps serving."""

from __future__ import annotations

import json

import pytest

from .channel_support import (
    HTTP,
    channel_list,
    epoch,
    fresh,
    id_number,
    publish,
    publish_raw,
    read_events,
    read_quietly,
)
from .raw_http import raw_request, request_bytes

GOOD_NAMES = ["a" * 64, "A.b-c_9", "9", "x..y", "trailing.", "UPPER"]


def _raw(server, method: str, target: str, headers: dict[str, bytes] | None = None, body: bytes = b""):
    return raw_request(server.port, request_bytes(method, target.encode("latin-1"), headers, body))


def _json_error(raw, status: int, code: str | None = None) -> dict:
    assert raw.status == status, (raw.status, raw.body[:300])
    assert raw.headers.get("content-type", "").startswith("application/json"), raw.headers
    body = json.loads(raw.body)
    assert isinstance(body["error"], str) and isinstance(body["message"], str), body
    if code is not None:
        assert body["error"] == code, body
    return body


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_edge_valid_names_work(server, name):
    publish(server, name, "ok")
    (event,) = read_events(server, f"/channels/{name}/events", 1)
    assert json.loads(event.data)["data"] == "ok"


def test_a_valid_surrogate_pair_is_an_emoji(server):
    channel = fresh()
    response = publish_raw(server, channel, b'{"data": "\\ud83d\\ude00"}', "application/json")
    assert response.status_code == 201, response.text
    (event,) = read_events(server, f"/channels/{channel}/events", 1)
    assert json.loads(event.data)["data"] == "\U0001f600"


def test_null_data_is_a_message(server):
    channel = fresh()
    publish(server, channel, None, event="empty")
    (event,) = read_events(server, f"/channels/{channel}/events", 1)
    assert event.type == "empty" and json.loads(event.data)["data"] is None


def test_oversized_chunked_message_is_413_not_truncated(server):
    channel = fresh()
    body = b"y" * 70000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8192]), body[i:i + 8192]) for i in range(0, len(body), 8192))
    raw = _raw(server, "POST", f"/channels/{channel}/messages",
               {"Content-Type": b"text/plain", "Transfer-Encoding": b"chunked"}, chunks + b"0\r\n\r\n")
    assert id_number(channel_list(server)[channel]["last_id"]) == 0, "a truncated message was published"
    _json_error(raw, 413)




def test_resuming_at_the_last_message_replays_nothing(server):
    channel = fresh()
    ep = epoch(publish(server, channel, 0)["id"])
    for n in range(1, 3):
        publish(server, channel, n)
    assert read_quietly(server, f"/channels/{channel}/events", {"Last-Event-ID": f"{ep}-3"}) == []


def test_server_still_serves_and_logged_no_errors(server):
    channel = fresh()
    publish(server, channel, "still here")
    (event,) = read_events(server, f"/channels/{channel}/events", 1)
    assert json.loads(event.data)["data"] == "still here"
    assert HTTP.get(server.url("/healthz")).status_code == 200
    log = server.log()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
    assert '" 500 ' not in log
