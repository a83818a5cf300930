"""Access decisions of the anonymous loopback mode, SSO proxies and logins, answered by the app in-process.

Flask's test client (tests/app_client.py), from loopback (127.0.0.1) like the real-server tests' client.
What needs the real server (running jobs, gunicorn's own header handling, start-up refusals, the CLI) is in
tests/test_auth_modes.py.
"""

from __future__ import annotations

import pytest

from .app_client import AppClient, app_client
from .auth_support import ALLOWED, EVIL, OK_ORIGIN, Credentials, assert_error, bearer

PORT = 8000  # the port in Host headers: the app in-process listens on none


@pytest.fixture(scope="module")
def anon(tmp_path_factory) -> AppClient:
    return app_client(tmp_path_factory.mktemp("anon-app"), {"SSECMD_ALLOWED_COMMANDS": ALLOWED})


@pytest.fixture(scope="module")
def proxied(tmp_path_factory) -> tuple[AppClient, None]:
    settings = {
        "SSECMD_ALLOWED_COMMANDS": ALLOWED,
        "SSECMD_TRUSTED_PROXIES": "127.0.0.1/32",
        "SSECMD_ROLES_HEADER": "X-Forwarded-Roles",
        "SSECMD_PROXY_ROLES": "runner",
    }
    return app_client(tmp_path_factory.mktemp("proxied-app"), settings), None


def _job_ids(client: AppClient) -> list[str]:
    response = client.get("/jobs")
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "127.0.0.1", "localhost"])
def test_loopback_host_names_are_served(anon, host):
    response = anon.get("/jobs", headers={"Host": host.format(port=PORT)})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",
        "evil.example",
        "127.0.0.1.evil.example:{port}",
        "localhost.evil.example:{port}",
        "localhost.:{port}",
        "127.0.0.1:{port}@evil.example",
        "0.0.0.0:{port}",
        "10.0.0.1:{port}",
        "[::ffff:7f00:1]:{port}",
        "2130706433:{port}",
    ],
)
def test_dns_rebinding_host_names_are_refused(anon, host):
    host = host.format(port=PORT)
    before = _job_ids(anon)
    headers = {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    for method, path in [("GET", "/jobs"), ("GET", "/run?command=echo%20rebound"), ("POST", "/jobs"),
                         ("GET", "/whoami")]:
        kwargs = {"json": {"argv": ["echo", "rebound"]}} if method == "POST" else {}
        response = anon.request(method, path, headers=headers, **kwargs)
        # Refused as a foreign host name, or (POST) as coming from another origin first.
        assert assert_error(response, 403)["error"] in ("forbidden", "cross_site_refused")
    assert _job_ids(anon) == before


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_cross_site_get_run_is_refused_and_starts_nothing(anon, site):
    before = _job_ids(anon)
    response = anon.get("/run?command=echo%20csrf", headers={"Sec-Fetch-Site": site,
                                                                        "Sec-Fetch-Mode": "no-cors"})
    assert_error(response, 403, "cross_site_refused")
    response = anon.get("/jobs", headers={"Sec-Fetch-Site": site, "Origin": EVIL})
    assert_error(response, 403, "cross_site_refused")
    assert _job_ids(anon) == before


@pytest.mark.parametrize("extra", [{"Origin": EVIL}, {"Referer": EVIL + "/page"}, {"Origin": "null"},
                                   {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}])
def test_foreign_origin_post_is_refused_in_anonymous_mode(anon, extra):
    before = _job_ids(anon)
    assert_error(anon.post("/jobs", json={"argv": ["echo", "csrf"]}, headers=extra), 403,
                 "cross_site_refused")
    assert _job_ids(anon) == before


@pytest.mark.parametrize("extra", [{"Origin": EVIL}, {"Referer": EVIL + "/page"}])
def test_foreign_origin_get_run_is_refused_in_anonymous_mode(anon, extra):
    before = _job_ids(anon)
    response = anon.get("/run?command=echo%20csrf", headers=extra)
    assert _job_ids(anon) == before
    assert response.status_code == 403


def test_basic_auth_header_from_a_front_proxy_is_ignored_in_anonymous_mode(anon):
    response = anon.get("/jobs", headers={"Authorization": "Basic YWxpY2U6cGFzcw=="})
    assert response.status_code == 200, response.text


def test_cors_is_closed_by_default(anon):
    for origin in (OK_ORIGIN, EVIL, "null", "http://127.0.0.1:1", f"http://localhost:{PORT}"):
        preflight = anon.options("/jobs", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                             "Access-Control-Request-Headers": "content-type"})
        assert "access-control-allow-origin" not in preflight.headers, (origin, preflight.headers)
        assert "access-control-allow-methods" not in preflight.headers
        for response in (anon.get("/healthz", headers={"Origin": origin}),
                         anon.get("/jobs", headers={"Origin": origin})):
            assert "access-control-allow-origin" not in response.headers, (origin, response.headers)
            assert "access-control-allow-credentials" not in response.headers


def test_proxy_users_are_subject_to_the_browser_rules(proxied):
    server, _ = proxied
    headers = {"X-Forwarded-User": "carol", "X-Forwarded-Roles": "operator"}
    assert_error(server.post("/jobs", json={"argv": ["true"]}, headers={**headers, "Origin": EVIL}), 403,
                 "cross_site_refused")
    assert_error(server.get("/run?command=true", headers={**headers, "Sec-Fetch-Site": "cross-site"}), 403)


def test_basic_auth_header_alongside_the_proxy_user_is_ignored(proxied):
    server, _ = proxied
    headers = {"X-Forwarded-User": "carol", "Authorization": "Basic Y2Fyb2w6cGFzcw=="}
    response = server.get("/whoami", headers=headers)
    assert response.status_code == 200 and response.json()["user"] == "carol", response.text


def test_user_header_from_an_untrusted_address_is_ignored(tmp_path, caplog):
    settings = {"SSECMD_ALLOWED_COMMANDS": ALLOWED, "SSECMD_TRUSTED_PROXIES": "10.9.9.9"}
    server = app_client(tmp_path, settings)
    for headers in ({"X-Forwarded-User": "carol"}, {"X-Forwarded-User": "carol", "X-Forwarded-Roles": "admin"},
                    {"X-Forwarded-User": "carol", "X-Forwarded-For": "10.9.9.9", "X-Real-IP": "10.9.9.9"}):
        assert_error(server.get("/whoami", headers=headers), 401)
        assert_error(server.post("/jobs", json={"argv": ["true"]}, headers=headers), 401)
    assert "ignoring X-Forwarded-User from untrusted address 127.0.0.1" in caplog.text


def test_non_ascii_user_names_log_in_and_so_do_the_users_after_them(tmp_path):
    creds = Credentials()
    creds.add_password("jörg", "pw-j\u00f6rg", ["operator"])
    creds.add_password("bob", "pw-bob", ["viewer"])
    srv = app_client(tmp_path, {**creds.env(), "SSECMD_ALLOWED_COMMANDS": ALLOWED})
    joerg = srv.post("/login", json={"user": "jörg", "password": "pw-jörg"})
    assert joerg.status_code == 200 and joerg.json()["user"] == "jörg", joerg.text
    bob = srv.post("/login", json={"user": "bob", "password": "pw-bob"})
    assert bob.status_code == 200 and bob.json()["user"] == "bob", bob.text
    assert_error(srv.post("/login", json={"user": "jörg", "password": "pw-bob"}), 401)
    # Lone surrogates: refused as JSON this server does not take, never a crash.
    for body in ('{"user": "\\ud800", "password": "x"}', '{"user": "bob", "password": "\\udfff"}',
                 '{"token": "\\ud800"}'):
        response = srv.post("/login", content=body, headers={"Content-Type": "application/json"})
        assert_error(response, 400, "bad_json")


def test_login_attempts_are_throttled_per_address(tmp_path):
    creds = Credentials()
    creds.add_token("someone", ["operator"])
    srv = app_client(tmp_path, {**creds.env(), "SSECMD_LOGIN_ATTEMPTS_PER_MINUTE": "3"})
    answers = [srv.post("/login", json={"token": "ssecmd_wrong"}).status_code for _ in range(4)]
    assert answers[:3] == [401, 401, 401]
    refused = srv.post("/login", json={"token": "ssecmd_wrong"})
    assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1


def test_allowed_hosts_refuses_other_host_names_even_with_auth(tmp_path):
    creds = Credentials()
    token = creds.add_token("root-admin", ["admin"])
    srv = app_client(tmp_path, {**creds.env(), "SSECMD_ALLOWED_HOSTS": "commander.internal"})
    refused = srv.get("/jobs", headers={**bearer(token), "Host": f"evil.example:{PORT}"})
    assert_error(refused, 403, "forbidden", "allowed_hosts")
    ok = srv.get("/jobs", headers={**bearer(token), "Host": f"commander.internal:{PORT}"})
    assert ok.status_code == 200


def test_behind_a_trusted_proxy_logins_are_throttled_per_forwarded_client(tmp_path):
    creds = Credentials()
    creds.add_token("someone", ["operator"])
    srv = app_client(tmp_path, {**creds.env(), "SSECMD_LOGIN_ATTEMPTS_PER_MINUTE": "2",
                                "SSECMD_TRUSTED_PROXIES": "127.0.0.1"})

    def attempt(forwarded_for: str) -> int:
        return srv.post("/login", json={"token": "ssecmd_wrong"},
                         headers={"X-Forwarded-For": forwarded_for}).status_code

    assert [attempt("203.0.113.7") for _ in range(3)] == [401, 401, 429]
    # Another client behind the same proxy has its own bucket ...
    assert attempt("198.51.100.4") == 401
    # ... and what a client writes in front of what the proxy appended changes nothing.
    assert attempt("192.0.2.1, 203.0.113.7") == 429
    assert attempt("192.0.2.2, 203.0.113.7") == 429


def test_forwarded_for_from_an_untrusted_peer_is_not_a_way_around_the_throttle(tmp_path):
    creds = Credentials()
    creds.add_token("someone", ["operator"])
    srv = app_client(tmp_path, {**creds.env(), "SSECMD_LOGIN_ATTEMPTS_PER_MINUTE": "2",
                                "SSECMD_TRUSTED_PROXIES": "10.9.9.9"})
    answers = [srv.post("/login", json={"token": "ssecmd_wrong"},
                         headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code for n in range(3)]
    assert answers == [401, 401, 429]
