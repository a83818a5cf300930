"""Token and login decisions, answered by the app in-process (Flask's test client; tests/app_client.py).

The same settings and credentials as tests/test_auth_tokens.py, which keeps what needs the real server:
jobs that run, streams, raw headers that httpx cannot send, and a server restarted without a user.
"""

from __future__ import annotations

import pytest

from app.policy.access import hash_token

from .app_client import AppClient, app_client
from .auth_support import EVIL, assert_error, bearer
from .test_auth_tokens import COOKIE, CREDS, T, _settings, _tampered

JOB_OUTPUT = b"alice was here\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory) -> AppClient:
    return app_client(tmp_path_factory.mktemp("auth-tokens-app"), _settings(CREDS))


@pytest.fixture(scope="module")
def alice_job(srv) -> str:
    """A finished job of alice's, for the read endpoints (stored as it ran: nothing runs in-process)."""
    return srv.finished_job(["echo", "alice was here"], owner="alice", output=JOB_OUTPUT).id


def _whoami(srv: AppClient, headers: dict[str, str]):
    return srv.get("/whoami", headers=headers)


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


def _jobs_of(srv: AppClient, token: str) -> list[str]:
    response = srv.get("/jobs", headers=bearer(token))
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


def login(srv: AppClient, body: dict) -> str:
    """POST /login and return the session cookie value."""
    response = srv.post("/login", json=body)
    assert response.status_code == 200, response.text
    return response.cookies[COOKIE]


def test_valid_bearer_token_identifies_the_user_with_its_roles(srv):
    response = _whoami(srv, bearer(T["alice"]))
    assert response.status_code == 200, response.text
    assert response.json() == {"user": "alice", "roles": ["operator"], "via": "token", "auth_configured": True}
    # The scheme is case-insensitive (RFC 7235).
    assert _whoami(srv, {"Authorization": f"bearer {T['bob']}"}).json()["user"] == "bob"


@pytest.mark.parametrize(
    "value",
    [
        "Bearer ssecmd_not-a-real-token",
        "Bearer " + T["alice"] + "x",
        "Bearer " + T["alice"][:-1],
        "Bearer " + T["alice"].upper(),
        "Bearer " + hash_token(T["alice"]),  # what the config keeps is not itself a credential
        "Bearer " + hash_token(T["alice"]).removeprefix("sha256:"),
    ],
)
def test_wrong_token_is_401_json(srv, value):
    for path in ("/whoami", "/jobs", "/actions"):
        assert_error(srv.get(path, headers={"Authorization": value}), 401, "unauthorized")
    response = srv.post("/jobs", json={"argv": ["true"]}, headers={"Authorization": value})
    assert_error(response, 401, "unauthorized")


def test_a_valid_token_after_an_unknown_scheme_does_not_count(srv):
    assert_error(_whoami(srv, {"Authorization": f"Basic {T['alice']}"}), 401)
    assert_error(_whoami(srv, {"Authorization": f"Bearer Bearer {T['alice']}"}), 401)


@pytest.mark.parametrize("value", ["Bearer ssecmd_wrong", "Bearer", "Basic YWxpY2U6cGFzcw=="])
def test_every_401_for_a_bad_token_carries_www_authenticate(srv, value):
    response = _whoami(srv, {"Authorization": value})
    assert response.status_code == 401
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs"),
        ("POST", "/jobs"),
        ("GET", "/run?command=echo%20hi"),
        ("GET", "/jobs/{job}"),
        ("GET", "/jobs/{job}/events"),
        ("GET", "/jobs/{job}/output"),
        ("DELETE", "/jobs/{job}"),
        ("POST", "/jobs/{job}/tickets"),
        ("GET", "/actions"),
        ("GET", "/whoami"),
    ],
)
def test_no_credentials_is_401_everywhere_but_healthz(srv, alice_job, method, path):
    kwargs = {"json": {"argv": ["true"]}} if method == "POST" else {}
    response = srv.request(method, path.format(job=alice_job), **kwargs)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer realm="sse-commander"'


def test_run_without_credentials_starts_nothing(srv):
    before = _jobs_of(srv, T["boss"])
    assert_error(srv.get("/run?command=echo%20sneaky"), 401)
    assert _jobs_of(srv, T["boss"]) == before


def test_healthz_stays_public(srv):
    response = srv.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


@pytest.mark.parametrize(
    "body",
    [
        {"user": "erin", "password": "wrong"},
        {"user": "erin", "password": ""},
        {"user": "erin", "password": "correct horse battery staple "},
        {"user": "ERIN", "password": "correct horse battery staple"},
        {"user": "nobody-here", "password": "correct horse battery staple"},
        {"user": "alice", "password": "anything"},  # a token-only user has no password
        {"token": "ssecmd_wrong"},
        {"token": hash_token(T["alice"])},
    ],
)
def test_wrong_credentials_at_login_are_401_without_a_cookie(srv, body):
    response = srv.post("/login", json=body)
    assert_error(response, 401, "unauthorized")
    assert not response.headers.get_list("set-cookie")


@pytest.mark.parametrize("body", [{}, {"token": ""}, {"token": 5}, {"user": "erin"}, {"password": "x"}, []])
def test_malformed_login_is_400(srv, body):
    response = srv.post("/login", json=body)
    assert response.status_code == 400, response.text
    assert not response.headers.get_list("set-cookie")


def test_forged_or_tampered_cookie_is_401(srv):
    value = login(srv, {"token": T["alice"]})
    for forged in _tampered(value):
        assert_error(_whoami(srv, _cookie(forged)), 401)
        assert_error(srv.get("/jobs", headers=_cookie(forged)), 401)


@pytest.mark.parametrize(
    "origin",
    [EVIL, "http://ok.example", "https://ok.example.evil.example", "https://sub.ok.example", "null",
     "https://ok.example:8443", "https://evil.example/https://ok.example"],
)
def test_cors_is_closed_to_other_origins(srv, origin):
    preflight = srv.options("/jobs", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-credentials" not in preflight.headers
    for response in (
        srv.get("/healthz", headers={"Origin": origin}),
        srv.get("/jobs", headers=bearer(T["alice"], Origin=origin)),
    ):
        assert "access-control-allow-origin" not in response.headers, response.headers


