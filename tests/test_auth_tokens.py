"""Access control against the real gunicorn server: tokens, browser login, cross-site rules, CORS, headers.

One server with tokens and passwords for several users serves the module; a
second one (same session secret, one user removed) shows that removal takes
effect for both the token and an existing session cookie.
"""

from __future__ import annotations

import json

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer

from .auth_support import (
    ACTIONS,
    ALLOWED,
    COOKIE,
    EVIL,
    HTTP,
    OK_ORIGIN,
    TIMEOUT,
    Credentials,
    assert_error,
    bearer,
    cookie_from,
    finished,
    login,
    start,
)
from .raw_http import raw_request, request_bytes
from .server import GunicornServer
from .sse_client import collect, output_of

SECRET = "test-session-secret-for-auth-tokens"


def _credentials() -> Credentials:
    creds = Credentials()
    creds.add_token("alice", ["operator"])
    creds.add_token("bob", ["operator"])
    creds.add_token("dave", ["operator"])
    creds.add_token("vera", ["viewer"])
    creds.add_token("rita", ["runner"])
    creds.add_token("boss", ["admin"])
    creds.add_password("erin", "correct horse battery staple", ["operator"])
    # One user, two credentials: a read-only token (say, for a dashboard) and an admin password.
    creds.add_token("ops", ["viewer"], key="ops-readonly")
    creds.add_password("ops", "ops admin password", ["admin"])
    return creds


CREDS = _credentials()
T = CREDS.tokens


def _settings(creds: Credentials) -> dict[str, str]:
    return {
        **creds.env(),
        "SSECMD_ALLOWED_COMMANDS": ALLOWED,
        "SSECMD_SESSION_SECRET": SECRET,
        "SSECMD_CORS_ALLOWED_ORIGINS": OK_ORIGIN,
        "SSECMD_ACTIONS": json.dumps(ACTIONS),
        "SSECMD_HEARTBEAT_INTERVAL": "1",
    }


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = GunicornServer(tmp_path_factory.mktemp("auth-tokens"), _settings(CREDS)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def alice_job(srv) -> str:
    """A finished job of alice's, for the read endpoints."""
    job = start(srv, T["alice"], {"argv": ["echo", "alice was here"]})
    finished(srv, T["alice"], job["id"])
    return job["id"]


def _whoami(srv, headers: dict[str, str]) -> httpx.Response:
    return HTTP.get(srv.url("/whoami"), headers=headers, timeout=TIMEOUT)


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


def _jobs_of(srv, token: str) -> list[str]:
    response = HTTP.get(srv.url("/jobs"), headers=bearer(token), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


# Tokens.


@pytest.mark.parametrize(
    "value",
    ["", "Bearer", "Bearer ", "Bearer    ", "Basic YWxpY2U6cGFzcw==", "Token abc", "Bearer\tabc", "Bearer: abc",
     "Digest username=alice"],
)
def test_malformed_authorization_is_401(srv, value):
    # Sent raw: httpx refuses some of these values (trailing blanks).
    raw = raw_request(srv.port, request_bytes("GET", b"/whoami", {"Authorization": value.encode()}))
    assert raw.status == 401, raw
    assert raw.headers["content-type"].startswith("application/json")
    assert json.loads(raw.body)["error"] == "unauthorized"


def test_roles_come_from_the_token_entry(srv):
    # viewer: reads, runs nothing.
    assert_error(HTTP.post(srv.url("/jobs"), json={"argv": ["true"]}, headers=bearer(T["vera"]), timeout=TIMEOUT),
                 403, "forbidden")
    # runner: actions only.
    assert_error(HTTP.post(srv.url("/jobs"), json={"argv": ["true"]}, headers=bearer(T["rita"]), timeout=TIMEOUT),
                 403, "forbidden")
    job = start(srv, T["rita"], {"action": "pick", "params": {"env": "prod"}})
    assert job["owner"] == "rita" and job["argv"] == ["echo", "prod"]
    # operator: free text.
    assert start(srv, T["bob"], {"argv": ["true"]})["owner"] == "bob"


# No credentials at all.


# Browser login.


def _check_cookie_attributes(line: str) -> None:
    attributes = [part.strip().lower() for part in line.split(";")[1:]]
    assert "httponly" in attributes, line
    assert "samesite=strict" in attributes, line
    assert "path=/" in attributes, line


def test_login_with_token_sets_a_strict_httponly_cookie_that_works(srv):
    response = HTTP.post(srv.url("/login"), json={"token": T["alice"]}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json() == {"user": "alice", "roles": ["operator"], "via": "session"}
    value, line = cookie_from(response)
    _check_cookie_attributes(line)
    assert T["alice"] not in line  # the token itself never goes into the cookie
    me = _whoami(srv, _cookie(value)).json()
    assert me["user"] == "alice" and me["via"] == "session"


def test_login_with_password_sets_a_cookie_that_works(srv):
    response = HTTP.post(srv.url("/login"), json={"user": "erin", "password": "correct horse battery staple"},
                          timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    value, line = cookie_from(response)
    _check_cookie_attributes(line)
    assert _whoami(srv, _cookie(value)).json()["user"] == "erin"


def test_cookie_works_for_jobs_and_for_an_eventsource_style_stream(srv):
    value = login(srv, {"token": T["alice"]})
    browser = {**_cookie(value), "Sec-Fetch-Site": "same-origin", "Origin": srv.base_url}
    response = HTTP.post(srv.url("/jobs"), json={"argv": ["echo", "from the browser"]}, headers=browser,
                          timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["owner"] == "alice"
    listed = HTTP.get(srv.url("/jobs"), headers={**_cookie(value), "Sec-Fetch-Site": "same-origin"}, timeout=TIMEOUT)
    assert listed.status_code == 200 and job["id"] in [j["id"] for j in listed.json()["jobs"]]
    # What an EventSource sends: the cookie, Accept, and no Origin for a same-origin GET.
    events = collect(
        srv.url(f"/jobs/{job['id']}/events"),
        headers={**_cookie(value), "Accept": "text/event-stream", "Sec-Fetch-Site": "same-origin",
                 "Sec-Fetch-Mode": "cors"},
    )
    assert output_of(events) == "from the browser\n"


def test_logout_clears_the_cookie(srv):
    with httpx.Client(base_url=srv.base_url, timeout=TIMEOUT) as browser:
        assert browser.post("/login", json={"token": T["bob"]}).status_code == 200
        assert browser.get("/whoami").json()["user"] == "bob"
        response = browser.post("/logout", headers={"Origin": srv.base_url})
        assert response.status_code == 200, response.text
        line = cookie_from(response)[1].lower()
        assert line.startswith(f"{COOKIE}=;") and ("max-age=0" in line or "expires=thu, 01 jan 1970" in line), line
        assert COOKIE not in browser.cookies
        assert_error(browser.get("/whoami"), 401)
        assert_error(browser.get("/jobs"), 401)


def _tampered(value: str) -> list[str]:
    rest = value.partition(".")[2]
    forged_payload = URLSafeTimedSerializer("x").dump_payload({"u": "boss"}).decode()
    flipped = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    return [
        flipped,  # signature changed
        forged_payload + "." + rest,  # payload swapped, signature kept
        value + "x",
        value.split(".")[0],
        "",
        "null",
        URLSafeTimedSerializer("another-secret", salt="ssecmd-session").dumps({"u": "boss"}),
        URLSafeTimedSerializer(SECRET, salt="wrong-salt").dumps({"u": "boss"}),
        URLSafeTimedSerializer(SECRET).dumps({"u": "boss"}),  # itsdangerous' default salt
    ]


def test_a_stream_ticket_is_not_a_session_cookie_and_vice_versa(srv, alice_job):
    ticket = HTTP.post(srv.url(f"/jobs/{alice_job}/tickets"), headers=bearer(T["alice"]),
                        timeout=TIMEOUT).json()["ticket"]
    assert_error(_whoami(srv, _cookie(ticket)), 401)
    value = login(srv, {"token": T["alice"]})
    response = HTTP.get(srv.url(f"/jobs/{alice_job}/output?ticket={value}"), timeout=TIMEOUT)
    assert_error(response, 401, "invalid_ticket")


def test_login_with_a_restricted_token_does_not_gain_the_users_other_roles(srv):
    response = HTTP.post(srv.url("/login"), json={"token": T["ops-readonly"]}, timeout=TIMEOUT)
    assert response.json()["roles"] == ["viewer"]
    value = cookie_from(response)[0]
    # The same token as Bearer: a viewer, who may not run anything.
    assert_error(HTTP.post(srv.url("/jobs"), json={"argv": ["true"]}, headers=bearer(T["ops-readonly"]),
                            timeout=TIMEOUT), 403)
    assert _whoami(srv, _cookie(value)).json()["roles"] == ["viewer"]
    browser = {**_cookie(value), "Origin": srv.base_url}
    run = HTTP.post(srv.url("/jobs"), json={"argv": ["echo", "escalated"]}, headers=browser, timeout=TIMEOUT)
    assert run.status_code == 403, run.text


# Cross-site requests carrying the cookie.


@pytest.fixture(scope="module")
def alice_cookie(srv) -> str:
    return login(srv, {"token": T["alice"]})


def _post_job(srv, headers: dict[str, str], argv: list[str] | None = None) -> httpx.Response:
    return HTTP.post(srv.url("/jobs"), json={"argv": argv or ["echo", "csrf"]}, headers=headers, timeout=TIMEOUT)


@pytest.mark.parametrize(
    "extra",
    [
        {"Origin": EVIL},
        {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
        {"Referer": EVIL + "/page"},
        {"Origin": "http://127.0.0.1:1"},  # another port is another origin
        {"Origin": "https://127.0.0.1:{port}"},  # and another scheme
        {"Origin": "http://127.0.0.1:{port}.evil.example"},
        {"Origin": "http://127.0.0.1:{port}@evil.example"},
        {"Referer": "http://127.0.0.1:{port}@evil.example/"},
        {"Origin": "http://localhost:{port}"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:{port}"},
        {},  # no Origin and no Referer
    ],
)
def test_cookie_post_from_another_origin_or_without_origin_is_refused(srv, alice_cookie, extra):
    before = _jobs_of(srv, T["alice"])
    headers = {**_cookie(alice_cookie), **{k: v.format(port=srv.port) for k, v in extra.items()}}
    assert_error(_post_job(srv, headers), 403, "cross_site_refused")
    assert _jobs_of(srv, T["alice"]) == before


def test_cookie_delete_from_another_origin_is_refused(srv, alice_cookie):
    job = start(srv, T["alice"], {"argv": ["sleep", "30"]})
    try:
        for extra in ({"Origin": EVIL}, {}, {"Referer": EVIL + "/"}):
            response = HTTP.delete(srv.url(f"/jobs/{job['id']}"), headers={**_cookie(alice_cookie), **extra},
                                    timeout=TIMEOUT)
            assert_error(response, 403, "cross_site_refused")
        state = HTTP.get(srv.url(f"/jobs/{job['id']}"), headers=bearer(T["alice"]), timeout=TIMEOUT).json()
        assert state["state"] == "running"
    finally:
        response = HTTP.delete(srv.url(f"/jobs/{job['id']}"), headers={**_cookie(alice_cookie),
                                                                        "Origin": srv.base_url}, timeout=TIMEOUT)
        assert response.status_code == 200 and response.json()["state"] == "cancelled", response.text


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_cross_site_get_run_with_cookie_is_refused(srv, alice_cookie, site):
    before = _jobs_of(srv, T["alice"])
    response = HTTP.get(srv.url("/run?command=echo%20csrf"),
                         headers={**_cookie(alice_cookie), "Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate"},
                         timeout=TIMEOUT)
    assert_error(response, 403, "cross_site_refused")
    assert _jobs_of(srv, T["alice"]) == before


def test_cross_site_reads_with_cookie_are_refused(srv, alice_cookie, alice_job):
    for path in ("/jobs", f"/jobs/{alice_job}", f"/jobs/{alice_job}/output", f"/jobs/{alice_job}/events", "/whoami"):
        response = HTTP.get(srv.url(path), headers={**_cookie(alice_cookie), "Sec-Fetch-Site": "cross-site"},
                             timeout=TIMEOUT)
        assert_error(response, 403, "cross_site_refused")


@pytest.mark.parametrize(
    "extra",
    [
        {"Origin": "{origin}"},
        {"Origin": "{origin}", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "{origin}/"},
        {"Referer": "{origin}/some/page?x=1"},
    ],
)
def test_same_origin_cookie_post_is_accepted(srv, alice_cookie, extra):
    headers = {**_cookie(alice_cookie), **{k: v.format(origin=srv.base_url) for k, v in extra.items()}}
    response = _post_job(srv, headers, ["echo", "same origin"])
    assert response.status_code == 201, response.text
    assert response.json()["owner"] == "alice"


def test_bearer_requests_are_not_subject_to_the_browser_rules(srv):
    hostile = bearer(T["alice"], Origin=EVIL, Referer=EVIL + "/x")
    hostile["Sec-Fetch-Site"] = "cross-site"
    response = _post_job(srv, hostile, ["echo", "scripted"])
    assert response.status_code == 201, response.text
    response = HTTP.get(srv.url("/run?command=echo%20scripted"), headers=hostile, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    # Without Origin or Referer at all (curl).
    assert _post_job(srv, bearer(T["alice"]), ["true"]).status_code == 201


def test_cross_site_login_is_refused(srv):
    response = HTTP.post(srv.url("/login"), json={"token": T["alice"]}, headers={"Origin": EVIL}, timeout=TIMEOUT)
    assert_error(response, 403, "cross_site_refused")
    assert not response.headers.get_list("set-cookie")


# CORS.


def test_cors_preflight_and_responses_for_the_configured_origin_only(srv):
    preflight = HTTP.options(
        srv.url("/jobs"),
        headers={"Origin": OK_ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
        timeout=TIMEOUT,
    )
    assert preflight.status_code in (200, 204), preflight.text
    assert preflight.headers["access-control-allow-origin"] == OK_ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    response = _post_job(srv, bearer(T["alice"], Origin=OK_ORIGIN, **{"Sec-Fetch-Site": "cross-site"}))
    assert response.status_code == 201, response.text
    assert response.headers["access-control-allow-origin"] == OK_ORIGIN
    assert "origin" in response.headers.get("vary", "").lower()
    health = HTTP.get(srv.url("/healthz"), headers={"Origin": OK_ORIGIN}, timeout=TIMEOUT)
    assert health.headers["access-control-allow-origin"] == OK_ORIGIN


# Security headers.


def _check_security_headers(response: httpx.Response) -> None:
    headers = response.headers
    assert headers.get("x-content-type-options") == "nosniff", headers
    assert headers.get("x-frame-options", "").upper() in ("DENY", "SAMEORIGIN"), headers
    csp = headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert "default-src" in csp, csp


def test_security_headers_on_every_kind_of_response(srv, alice_job):
    responses = [
        HTTP.get(srv.url("/healthz"), timeout=TIMEOUT),
        HTTP.get(srv.url("/jobs"), timeout=TIMEOUT),  # 401
        HTTP.get(srv.url("/jobs"), headers=bearer(T["alice"]), timeout=TIMEOUT),
        HTTP.get(srv.url("/jobs/nope"), headers=bearer(T["alice"]), timeout=TIMEOUT),  # 404
        HTTP.get(srv.url("/jobs/" + alice_job + "/output"), headers=bearer(T["alice"]), timeout=TIMEOUT),
        HTTP.post(srv.url("/jobs"), json={"argv": ["true"]}, headers={**_cookie("x"), "Origin": EVIL},
                   timeout=TIMEOUT),
        HTTP.post(srv.url("/login"), json={"token": "bad"}, timeout=TIMEOUT),
    ]
    for response in responses:
        _check_security_headers(response)
    with HTTP.stream("GET", srv.url(f"/jobs/{alice_job}/events"), headers=bearer(T["alice"]),
                      timeout=TIMEOUT) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        _check_security_headers(stream)


# A user removed from the config.


def test_token_and_session_of_a_removed_user_stop_working(srv, make_server):
    dave_cookie = login(srv, {"token": T["dave"]})
    assert _whoami(srv, _cookie(dave_cookie)).json()["user"] == "dave"
    without_dave = Credentials(
        token_entries=[e for e in CREDS.token_entries if e["user"] != "dave"], user_entries=CREDS.user_entries
    )
    other = make_server(_settings(without_dave))
    # The same secret: alice's sessions carry over, dave's do not.
    alice_cookie = login(srv, {"token": T["alice"]})
    assert _whoami(other, _cookie(alice_cookie)).json()["user"] == "alice"
    assert_error(_whoami(other, bearer(T["dave"])), 401, "unauthorized")
    assert_error(_whoami(other, _cookie(dave_cookie)), 401, "unauthorized")
    assert_error(HTTP.post(other.url("/login"), json={"token": T["dave"]}, timeout=TIMEOUT), 401)
