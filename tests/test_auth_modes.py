"""Access control against the real gunicorn server: anonymous loopback mode, SSO proxies, refusing to serve
publicly without auth, and credentials made by the ``sse-commander`` CLI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tomllib

import pytest

from .auth_support import (
    ALLOWED,
    HTTP,
    Credentials,
    assert_error,
    bearer,
    wait_for_audit,
)
from .raw_http import raw_request, request_bytes
from .server import REPO, VENV_BIN, GunicornServer, free_port, wait_until
from .sse_client import collect, output_of

# Anonymous mode: no credentials configured, loopback only.


@pytest.fixture(scope="module")
def anon(tmp_path_factory):
    server = GunicornServer(tmp_path_factory.mktemp("anon"), {"SSECMD_ALLOWED_COMMANDS": ALLOWED}).start()
    yield server
    server.stop()


def _job_ids(server) -> list[str]:
    response = HTTP.get(server.url("/jobs"))
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


def test_anonymous_mode_serves_loopback_clients_as_admin(anon):
    me = HTTP.get(anon.url("/whoami")).json()
    assert me == {"user": "anonymous", "roles": ["admin"], "via": "anonymous", "auth_configured": False}
    events = collect(anon.url("/run?command=echo%20local"))
    assert output_of(events) == "local\n"
    # curl sends neither Origin nor Referer: fine without a cookie.
    assert HTTP.post(anon.url("/jobs"), json={"argv": ["true"]}).status_code == 201
    assert_error(HTTP.post(anon.url("/login"), json={"token": "x"}), 400)


def test_audit_goes_to_the_gunicorn_log_by_default(anon):
    response = HTTP.post(anon.url("/jobs"), json={"argv": ["echo", "audited-by-default"]})
    job_id = response.json()["id"]

    def logged() -> list[dict]:
        lines = [line for line in anon.log().splitlines() if line.startswith('{"audit"')]
        return [json.loads(line) for line in lines]

    assert wait_until(lambda: any(r.get("job") == job_id and r["audit"] == "job_end" for r in logged()), 5)
    start = next(r for r in logged() if r.get("job") == job_id and r["audit"] == "job_start")
    assert start["user"] == "anonymous" and start["argv"] == ["echo", "audited-by-default"]


# Behind an SSO proxy.


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    audit = tmp_path_factory.mktemp("proxy-audit") / "audit.log"
    settings = {
        "SSECMD_ALLOWED_COMMANDS": ALLOWED,
        "SSECMD_TRUSTED_PROXIES": "127.0.0.1/32",
        "SSECMD_ROLES_HEADER": "X-Forwarded-Roles",
        "SSECMD_PROXY_ROLES": "runner",
        "SSECMD_AUDIT_LOG": str(audit),
    }
    server = GunicornServer(tmp_path_factory.mktemp("proxied"), settings).start()
    yield server, audit
    server.stop()


def test_trusted_proxy_user_acts_with_proxy_roles(proxied):
    server, _audit = proxied
    me = HTTP.get(server.url("/whoami"), headers={"X-Forwarded-User": "carol"}).json()
    assert me == {"user": "carol", "roles": ["runner"], "via": "proxy", "auth_configured": True}
    # runner (proxy_roles): no free text.
    assert_error(HTTP.post(server.url("/jobs"), json={"argv": ["true"]}, headers={"X-Forwarded-User": "carol"}), 403)


def test_roles_header_from_the_trusted_proxy(proxied):
    server, audit = proxied
    headers = {"X-Forwarded-User": "carol", "X-Forwarded-Roles": "operator"}
    assert HTTP.get(server.url("/whoami"), headers=headers).json()["roles"] == ["operator"]
    response = HTTP.post(server.url("/jobs"), json={"argv": ["echo", "via sso"]},
                         headers={**headers, "Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["owner"] == "carol"
    record = wait_for_audit(audit, lambda r: r["audit"] == "job_start" and r.get("job") == job["id"])[0]
    assert record["user"] == "carol" and record["via"] == "proxy"
    # Unknown roles are dropped, not invented.
    mixed = {"X-Forwarded-User": "carol", "X-Forwarded-Roles": "bogus, admin ,root"}
    assert HTTP.get(server.url("/whoami"), headers=mixed).json()["roles"] == ["admin"]
    # Another proxy user does not see carol's job.
    dan = {"X-Forwarded-User": "dan", "X-Forwarded-Roles": "operator"}
    assert_error(HTTP.get(server.url(f"/jobs/{job['id']}"), headers=dan), 404)


def _carols_jobs(server) -> list[str]:
    headers = {"X-Forwarded-User": "carol", "X-Forwarded-Roles": "operator"}
    return [job["id"] for job in HTTP.get(server.url("/jobs"), headers=headers).json()["jobs"]]


def test_a_change_by_a_proxy_user_must_say_where_it_comes_from(proxied):
    """The SSO proxy's login is a cookie too (the proxy's): a page on another site could ride on it."""
    server, _ = proxied
    headers = {"X-Forwarded-User": "carol", "X-Forwarded-Roles": "operator"}
    before = _carols_jobs(server)
    refused = HTTP.post(server.url("/jobs"), json={"argv": ["echo", "csrf"]}, headers=headers)
    assert_error(refused, 403, "cross_site_refused", "needs an Origin, Referer or Sec-Fetch-Site header")
    run = HTTP.get(server.url("/run?command=echo%20csrf"), headers=headers)
    assert_error(run, 403, "cross_site_refused")
    assert _carols_jobs(server) == before
    same_origin = [{"Origin": server.base_url}, {"Referer": server.url("/")}, {"Sec-Fetch-Site": "same-origin"},
                   {"Sec-Fetch-Site": "none"}]
    for extra in same_origin:
        response = HTTP.post(server.url("/jobs"), json={"argv": ["echo", "ok"]}, headers={**headers, **extra})
        assert response.status_code == 201, (extra, response.text)
    assert HTTP.get(server.url("/jobs"), headers=headers).status_code == 200  # reads need nothing


def test_a_repeated_user_header_is_refused(proxied):
    server, _ = proxied
    before = _carols_jobs(server)
    for method, target, body in [("GET", b"/whoami", b""), ("POST", b"/jobs", b'{"argv": ["echo", "dup"]}')]:
        lines = (b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Forwarded-User: carol\r\n"
                 b"X-Forwarded-User: admin\r\nX-Forwarded-Roles: operator\r\nSec-Fetch-Site: same-origin\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s")
        raw = raw_request(server.port, lines % (method.encode(), target, len(body), body))
        assert raw.status == 401, raw
        assert raw.headers["content-type"].startswith("application/json")
        answer = json.loads(raw.body)
        assert answer["error"] == "unauthorized" and "must be sent once" in answer["message"], answer
    assert _carols_jobs(server) == before


def test_proxy_users_and_token_users_of_one_name_are_one_principal(tmp_path):
    """The same person reaching the service two ways: the SSO proxy for the browser, a token for scripts."""
    creds = Credentials()
    token = creds.add_token("carol", ["operator"])
    settings = {**creds.env(), "SSECMD_ALLOWED_COMMANDS": ALLOWED, "SSECMD_TRUSTED_PROXIES": "127.0.0.1",
                "SSECMD_PROXY_ROLES": "operator"}
    server = GunicornServer(tmp_path, settings).start()
    try:
        job = HTTP.post(server.url("/jobs"), json={"argv": ["sleep", "30"]}, headers=bearer(token)).json()
        via_proxy = {"X-Forwarded-User": "carol", "Sec-Fetch-Site": "same-origin"}
        assert HTTP.get(server.url(f"/jobs/{job['id']}"), headers=via_proxy).json()["owner"] == "carol"
        cancelled = HTTP.delete(server.url(f"/jobs/{job['id']}"), headers=via_proxy)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
        other = {"X-Forwarded-User": "carol2", "Sec-Fetch-Site": "same-origin"}
        assert_error(HTTP.get(server.url(f"/jobs/{job['id']}"), headers=other), 404)
    finally:
        server.stop()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Forwarded-User": ""},
        {"X_Forwarded_User": "carol"},  # what a proxy that strips only the dashed name would let through
        {"X-Forwarded-Roles": "admin"},
        {"X-Remote-User": "carol"},
    ],
)
def test_no_user_header_is_401(proxied, headers):
    server, _ = proxied
    assert_error(HTTP.get(server.url("/whoami"), headers=headers), 401)


def test_blank_proxy_user_is_401(proxied):
    server, _ = proxied
    raw = raw_request(server.port, request_bytes("GET", b"/whoami", {"X-Forwarded-User": b"\xa0"}))
    assert raw.status == 401, raw


def test_proxy_user_names_are_utf8(proxied):
    server, _ = proxied
    raw = raw_request(server.port, request_bytes("GET", b"/whoami", {"X-Forwarded-User": "jos\u00e9".encode()}))
    assert raw.status == 200, raw
    assert json.loads(raw.body)["user"] == "jos\u00e9"


# Refusing to listen publicly without auth.


def _gunicorn(tmp_path, env_extra: dict[str, str], binds: list[str]) -> GunicornServer:
    server = GunicornServer(tmp_path, {"SSECMD_ALLOWED_COMMANDS": ALLOWED, **env_extra})
    args = list(server.args)
    at = args.index("--bind")
    del args[at:at + 2]
    for bind in reversed(binds):
        args[at:at] = ["--bind", bind]
    server.args = args
    return server


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    ("binds", "env"),
    [
        ([], {"SSECMD_BIND": "0.0.0.0:{port}"}),
        (["0.0.0.0:{port}"], {}),
        (["127.0.0.1:{other}", "0.0.0.0:{port}"], {}),
        (["[::]:{port}"], {}),
        (["0.0.0.0:{port}"], {"SSECMD_INSECURE_NO_AUTH": "false"}),
    ],
)
def test_public_bind_without_auth_refuses_to_start(tmp_path, binds, env):
    port, other = free_port(), free_port()
    fill = {"port": port, "other": other}
    server = _gunicorn(tmp_path, {k: v.format(**fill) for k, v in env.items()}, [b.format(**fill) for b in binds])
    result = subprocess.run(server.args, cwd=REPO, env=server.env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0, result.stderr
    assert "refusing to listen on" in result.stderr and "without authentication" in result.stderr, result.stderr
    assert "Listening at" not in result.stderr + result.stdout
    assert not _listening(port) and not _listening(other)


def test_insecure_no_auth_starts_on_a_public_bind_and_says_so(tmp_path):
    port = free_port()
    server = _gunicorn(tmp_path, {"SSECMD_INSECURE_NO_AUTH": "true"}, [f"0.0.0.0:{port}"])
    server.port, server.base_url = port, f"http://127.0.0.1:{port}"
    server.start()
    try:
        assert "INSECURE" in server.log()
        assert f"Listening at: http://0.0.0.0:{port}" in server.log()
        assert HTTP.get(server.url("/whoami")).json()["user"] == "anonymous"
    finally:
        server.stop()


# Credentials from the CLI, pasted into a TOML config; with auth the server may listen publicly.


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    return subprocess.run([str(VENV_BIN / "sse-commander"), *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=30)


CLI_USER = 'ops "lead" \\ é'


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    made = _cli("token", "--user", CLI_USER, "--roles", "operator,viewer")
    assert made.returncode == 0, made.stderr
    token, _, entry = made.stdout.partition("\n")
    assert token.startswith("ssecmd_") and token not in entry
    password = _cli("password", "--user", "pw-user", "--roles", "viewer", stdin="s3cret pass\n")
    assert password.returncode == 0, password.stderr
    config = tmp / "config.toml"
    config.write_text(f'allowed_commands = {json.dumps(ALLOWED.split())}\n\n{entry}\n{password.stdout}\n')
    config.chmod(0o600)  # the server refuses a config file with secrets that others can read
    port = free_port()
    server = _gunicorn(tmp, {"SSECMD_CONFIG": str(config)}, [f"0.0.0.0:{port}"])
    server.port, server.base_url = port, f"http://127.0.0.1:{port}"
    server.start()
    yield server, token
    server.stop()


def test_token_configured_server_starts_on_a_public_bind(cli_server):
    server, _ = cli_server
    assert "INSECURE" not in server.log() and "Listening at: http://0.0.0.0:" in server.log()
    assert_error(HTTP.get(server.url("/jobs")), 401)


def test_cli_token_authenticates_once_pasted_into_the_config(cli_server):
    server, token = cli_server
    me = HTTP.get(server.url("/whoami"), headers=bearer(token)).json()
    assert me["user"] == CLI_USER and me["roles"] == ["operator", "viewer"] and me["via"] == "token"
    response = HTTP.post(server.url("/jobs"), json={"argv": ["echo", "cli"]}, headers=bearer(token))
    assert response.status_code == 201 and response.json()["owner"] == CLI_USER
    login = HTTP.post(server.url("/login"), json={"user": "pw-user", "password": "s3cret pass"})
    assert login.status_code == 200 and login.json()["roles"] == ["viewer"], login.text
    assert_error(HTTP.post(server.url("/login"), json={"user": "pw-user", "password": "s3cret pass\n"}), 401)


def test_cli_entry_is_valid_toml_for_any_user_name():
    made = _cli("token", "--user", "deploy-bot \U0001f916", "--roles", "runner")
    entry = made.stdout.partition("\n")[2]
    assert tomllib.loads(entry)["tokens"][0]["user"] == "deploy-bot \U0001f916"


