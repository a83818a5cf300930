"""Bad input to the channel endpoints, answered by the app in-process (Flask's test client; tests/app_client.py).

Always a 4xx JSON answer, never a 500, nothing published or created, and the app keeps serving. What needs
the real server (chunked bodies, messages that must arrive on a stream) is in tests/test_channels_input.py.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from .app_client import AppClient, app_client
from .channel_support import assert_json_error, epoch, fresh, id_number
from .test_channels_input import _json_error

BAD_NAMES = [
    "a" * 65,
    "bad%20name",
    "ch%C3%A9",  # ché
    "%F0%9F%98%80",  # an emoji
    "%EF%BC%A1",  # fullwidth A
    ".hidden",
    "..",
    "-dash",
    "_under",
    "a%00b",
    "a%0Ab",
    "a%0D",
    "tab%09",
    "semi;colon",
    "a:b",
    "a%2Cb",
    "a+b",
    "%FF",  # not UTF-8 at all
    "a=1",
]
BAD_BODIES = [
    ("empty text", b"", "text/plain"),
    ("empty, no content type", b"", None),
    ("empty JSON", b"", "application/json"),
    ("whitespace JSON", b"  \n", "application/json"),
    ("text not UTF-8", b"caf\xe9", "text/plain"),
    ("text with an encoded surrogate", b"\xed\xa0\x80", "text/plain"),
    ("overlong UTF-8", b"\xc0\xaf", "text/plain"),
    ("JSON not UTF-8", b'{"data": "caf\xe9"}', "application/json"),
    ("UTF-16 JSON", '{"data": 1}'.encode("utf-16"), "application/json"),
    ("invalid JSON", b"{not json", "application/json"),
    ("truncated JSON", b'{"data": [1, 2', "application/json"),
    ("trailing garbage", b'{"data": 1} x', "application/json"),
    ("two documents", b'{"data": 1}{"data": 2}', "application/json"),
    ("array", b"[1, 2]", "application/json"),
    ("string", b'"text"', "application/json"),
    ("number", b"3", "application/json"),
    ("null", b"null", "application/json"),
    ("true", b"true", "application/json"),
    ("unknown field", b'{"data": 1, "extra": 2}', "application/json"),
    ("id field", b'{"data": 1, "id": 7}', "application/json"),
    ("retry field", b'{"data": 1, "retry": 1}', "application/json"),
    ("missing data", b'{"event": "notice"}', "application/json"),
    ("empty object", b"{}", "application/json"),
    ("NaN", b'{"data": NaN}', "application/json"),
    ("Infinity", b'{"data": [Infinity]}', "application/json"),
    ("-Infinity", b'{"data": {"x": -Infinity}}', "application/json"),
    ("lone high surrogate", b'{"data": "\\ud800"}', "application/json"),
    ("lone low surrogate", b'{"data": "x\\udfffy"}', "application/json"),
    ("reversed pair", b'{"data": "\\ude00\\ud83d"}', "application/json"),
    ("surrogate in a key", b'{"data": {"\\udc00": 1}}', "application/json"),
    ("surrogate deep in a list", b'{"data": [[[{"k": ["\\ud800"]}]]]}', "application/json"),
    ("nested far too deep", b'{"data": ' + b"[" * 30000 + b"]" * 30000 + b"}", "application/json"),
]
BAD_EVENTS = ["error", "open", "gap", "has space", "new\nline", "cr\rhere", "tab\t", "", " message", "message ",
              "1abc", "-x", ".x", "_x", "é", "E" * 65, "nul\u0000", "a:b", 5, None, True, ["x"], {"a": 1}]


BAD_LAST_EVENT_IDS = [b"abc", b"-1", b"+1", b"1.5", b"0x10", b"1e3", b"1 2", b"99999999999999999999", b"\xef\xbc\x91",
                      b"3,4", b"channel:x=1", b"abc-", b"ABC-1", b"a_b-1", b"abc-1-2", b"abc--1", b"-abc-1",
                      b"x" * 33 + b"-1"]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> AppClient:
    """The app in-process (named server so that the cases read as they do against gunicorn)."""
    return app_client(tmp_path_factory.mktemp("channels-input-app"), {"SSECMD_HEARTBEAT_INTERVAL": "1"})


def _raw(client: AppClient, method: str, target: str, headers: dict[str, bytes] | None = None, body: bytes = b""):
    """The request as the raw-socket tests send it (headers and body exactly), answered like a raw response."""
    answer = client.request(method, target, headers=headers or {}, content=body)
    return SimpleNamespace(status=answer.status_code, headers={k.lower(): v for k, v in answer.headers.items()},
                           body=answer.content)


def channel_list(client: AppClient) -> dict[str, dict]:
    """GET /channels, by name."""
    answer = client.get("/channels")
    assert answer.status_code == 200, answer.text
    return {entry["name"]: entry for entry in answer.json()["channels"]}


def publish_raw(client: AppClient, channel: str, body: bytes, content_type: str | None):
    """POST exact body bytes to a channel."""
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return client.post(f"/channels/{channel}/messages", content=body, headers=headers)


def publish(client: AppClient, channel: str, data) -> dict:
    """Publish JSON {"data": ...}; the 201 answer."""
    answer = publish_raw(client, channel, json.dumps({"data": data}).encode(), "application/json")
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_channel_names_are_400_everywhere(server, name):
    text = {"Content-Type": b"text/plain", "Content-Length": b"2"}
    _json_error(_raw(server, "POST", f"/channels/{name}/messages", text, b"hi"), 400)
    _json_error(_raw(server, "GET", f"/channels/{name}/events"), 400)
    _json_error(_raw(server, "GET", f"/events?channel={name}"), 400)


def test_invalid_names_create_no_channel(server):
    before = set(channel_list(server))
    for name in BAD_NAMES:
        _raw(server, "GET", f"/channels/{name}/events")
    assert set(channel_list(server)) == before


@pytest.mark.parametrize(("label", "body", "content_type"), BAD_BODIES, ids=[case[0] for case in BAD_BODIES])
def test_bad_bodies_are_400(server, label, body, content_type):
    channel = fresh()
    headers = {"Content-Length": str(len(body)).encode()}
    if content_type is not None:
        headers["Content-Type"] = content_type.encode()
    _json_error(_raw(server, "POST", f"/channels/{channel}/messages", headers, body), 400)
    assert id_number(channel_list(server)[channel]["last_id"]) == 0  # nothing was published


@pytest.mark.parametrize("event", BAD_EVENTS, ids=[repr(e) for e in BAD_EVENTS])
def test_bad_event_names_are_400(server, event):
    channel = fresh()
    response = publish_raw(server, channel, json.dumps({"data": 1, "event": event}).encode(), "application/json")
    assert_json_error(response, 400, "bad_message")
    assert id_number(channel_list(server)[channel]["last_id"]) == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_oversized_message_is_413(server, content_type):
    channel = fresh()
    body = b"x" * 65537 if content_type == "text/plain" else b'{"data": "' + b"x" * 65530 + b'"}'
    response = publish_raw(server, channel, body, content_type)
    assert_json_error(response, 413)
    # The limit, for a page to say "Message too long: 80 KB, limit 64 KB" (whichever check refused it).
    assert response.json()["limit_bytes"] == 65536
    assert id_number(channel_list(server)[channel]["last_id"]) == 0


def test_deep_nesting_near_the_recursion_limit_is_never_a_500(tmp_path, caplog):
    srv = app_client(tmp_path, {"SSECMD_HEARTBEAT_INTERVAL": "1"})
    channel = "deep"
    published = 0

    def post(depth: int) -> int:
        nonlocal published
        body = b'{"data": ' + b"[" * depth + b"]" * depth + b"}"
        status = publish_raw(srv, channel, body, "application/json").status_code
        published += status == 201
        return status

    # Nesting the parser accepts is published (201); deeper is refused (400). Find where one turns into the other.
    low, high = 1, 5000
    assert post(low) == 201 and post(high) == 400
    while high - low > 1:
        middle = (low + high) // 2
        if post(middle) == 201:
            low = middle
        else:
            high = middle
    statuses = {depth: post(depth) for depth in range(max(1, low - 20), low + 40)}
    assert 500 not in statuses.values(), {d: s for d, s in statuses.items() if s == 500}
    assert "unhandled error" not in caplog.text
    # Every id went to a message: refused requests use none.
    assert id_number(publish(srv, channel, "after")["id"]) == published + 1


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/channels/chat/messages", "POST"),
        ("PUT", "/channels/chat/messages", "POST"),
        ("DELETE", "/channels/chat/messages", "POST"),
        ("PATCH", "/channels/chat/messages", "POST"),
        ("POST", "/channels/chat/events", "GET"),
        ("PUT", "/channels/chat/events", "GET"),
        ("DELETE", "/channels/chat/events", "GET"),
        ("POST", "/channels", "GET"),
        ("DELETE", "/channels", "GET"),
        ("POST", "/events?channel=chat", "GET"),
        ("DELETE", "/events?channel=chat", "GET"),
    ],
)
def test_wrong_methods_are_405_with_allow(server, method, path, allowed):
    response = server.request(method, path, content=b"x", headers={"Content-Type": "text/plain"})
    assert_json_error(response, 405)
    assert allowed in response.headers["allow"]


def test_unknown_paths_under_channels_are_404_json(server):
    for path in ("/channels/chat", "/channels/chat/", "/channels/chat/message", "/channels/chat/events/1",
                 "/channels/a/b/messages"):
        response = server.get(path)
        assert response.status_code in (404, 308), (path, response.status_code)
        assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("value", BAD_LAST_EVENT_IDS, ids=[repr(v) for v in BAD_LAST_EVENT_IDS])
def test_garbage_last_event_id_is_400(server, value):
    channel = fresh()
    publish(server, channel, 1)
    _json_error(_raw(server, "GET", f"/channels/{channel}/events", {"Last-Event-ID": value}), 400)
    query = "".join(f"%{byte:02X}" for byte in value)
    _json_error(_raw(server, "GET", f"/channels/{channel}/events?last_event_id={query}"), 400)


def test_last_event_id_query_given_twice_is_400(server):
    channel = fresh()
    publish(server, channel, 1)
    _json_error(_raw(server, "GET", f"/channels/{channel}/events?last_event_id=0&last_event_id=1"), 400)


def test_last_event_id_beyond_the_last_message_is_400(server):
    channel = fresh()
    ep = epoch(publish(server, channel, 0)["id"])
    for n in range(1, 3):
        publish(server, channel, n)
    path = f"/channels/{channel}/events"
    _json_error(_raw(server, "GET", path, {"Last-Event-ID": f"{ep}-4".encode()}), 400, "bad_request")
    _json_error(_raw(server, "GET", f"{path}?last_event_id={ep}-1000"), 400, "bad_request")


def test_the_app_still_serves(server):
    assert server.get("/healthz").status_code == 200
