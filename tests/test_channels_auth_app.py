"""Who may read and write channels: the refusals, answered by the app in-process (tests/app_client.py).

The same users and roles as tests/test_channels_auth.py, which keeps what needs the real server (messages
that must arrive, the jobs channel as jobs run, tickets of running jobs).
"""

from __future__ import annotations

import json

import pytest

from app.policy.access import hash_token

from .app_client import AppClient, app_client
from .channel_support import assert_json_error
from .test_channels_auth import ROLES, TOKENS, USERS, auth


@pytest.fixture(scope="module")
def srv(tmp_path_factory) -> AppClient:
    entries = [{"user": user, "roles": roles, "hash": hash_token(TOKENS[user])} for user, roles in USERS.items()]
    return app_client(tmp_path_factory.mktemp("channels-auth-app"), {
        "SSECMD_TOKENS": json.dumps(entries),
        "SSECMD_ROLES": json.dumps(ROLES),
    })


def channel_list(client: AppClient, headers: dict[str, str]) -> dict[str, dict]:
    """GET /channels, by name."""
    answer = client.get("/channels", headers=headers)
    assert answer.status_code == 200, answer.text
    return {entry["name"]: entry for entry in answer.json()["channels"]}


def publish_raw(client: AppClient, channel: str, body: bytes, content_type: str, headers: dict[str, str]):
    """POST exact body bytes to a channel."""
    return client.post(f"/channels/{channel}/messages", content=body, headers={**headers, "Content-Type": content_type})


@pytest.mark.parametrize("system", ["jobs", "stats"])
@pytest.mark.parametrize("user", sorted(USERS))
def test_nobody_publishes_to_system_channels(srv, system, user):
    before = channel_list(srv, auth("root"))[system]["last_id"]
    for body, content_type in ((b'{"data": 1}', "application/json"), (b"text", "text/plain"),
                               (b"{bad json", "application/json")):
        assert_json_error(publish_raw(srv, system, body, content_type, auth(user)), 403, "forbidden")
    assert channel_list(srv, auth("root"))[system]["last_id"] == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/channels"),
        ("GET", "/channels/chat/events"),
        ("POST", "/channels/chat/messages"),
        ("GET", "/events?channel=chat"),
        ("GET", "/channels/jobs/events"),
        ("GET", "/events?job=0123456789abcdef"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Bearer", "Bearer ssecmd_" + "x" * 43])
def test_unauthenticated_requests_are_401(srv, method, path, authorization):
    headers = {"Content-Type": "text/plain"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = srv.request(method, path, headers=headers, content=b"hi" if method == "POST" else None)
    assert_json_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


