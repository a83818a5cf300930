"""Shared pieces of the access-control tests (tests/test_auth_*.py): credentials, config, small HTTP helpers."""

from __future__ import annotations

import http.cookiejar
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.policy.access import hash_password, hash_token, new_token

from .server import GunicornServer, wait_until

COOKIE = "ssecmd_session"
EVIL = "https://evil.example"
OK_ORIGIN = "https://ok.example"
# No program on this list can run another program: whatever reaches a child is that program with literal args.
ALLOWED = "echo printf seq sleep cat true false"
TIMEOUT = httpx.Timeout(15, connect=5)


def _client() -> httpx.Client:
    # Never stores a cookie: every test says exactly which cookie it sends. Shared, because building a
    # client costs ~50 ms; no keep-alive, so that stopping a server never waits for an idle connection.
    jar = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.Client(timeout=TIMEOUT, cookies=jar, headers={"Connection": "close"})


HTTP = _client()

ACTIONS = {
    "greet": {
        "description": "Say hello",
        "argv": ["echo", "hello", "{name}"],
        "params": {"name": {"type": "string", "pattern": "[a-z]{1,10}"}},
    },
    "count": {"argv": ["seq", "{n}"], "timeout": 60, "params": {"n": {"type": "integer", "min": 1, "max": 5}}},
    "pick": {"argv": ["echo", "{env}"], "params": {"env": {"type": "choice", "choices": ["staging", "prod"]}}},
    # A free string: whatever the caller sends must arrive as exactly one argv item, bracketed by printf.
    "say": {"argv": ["printf", "[%s]\\n", "{text}"], "params": {"text": {"type": "string"}}},
}


@dataclass
class Credentials:
    """Tokens (user -> token) and passwords (user -> password) with the JSON for SSECMD_TOKENS / SSECMD_USERS."""

    tokens: dict[str, str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    token_entries: list[dict] = field(default_factory=list)
    user_entries: list[dict] = field(default_factory=list)

    def add_token(self, user: str, roles: list[str], key: str | None = None) -> str:
        token = new_token()
        self.tokens[key or user] = token
        self.token_entries.append({"user": user, "roles": roles, "hash": hash_token(token)})
        return token

    def add_password(self, user: str, password: str, roles: list[str]) -> None:
        self.passwords[user] = password
        self.user_entries.append({"name": user, "roles": roles, "password_hash": hash_password(password)})

    def env(self) -> dict[str, str]:
        env = {"SSECMD_TOKENS": json.dumps(self.token_entries)}
        if self.user_entries:
            env["SSECMD_USERS"] = json.dumps(self.user_entries)
        return env


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def start(server: GunicornServer, token: str, body: dict, expect: int = 201) -> dict:
    """POST /jobs with a Bearer token; returns the JSON answer after checking the status."""
    response = HTTP.post(server.url("/jobs"), json=body, headers=bearer(token), timeout=TIMEOUT)
    assert response.status_code == expect, response.text
    return response.json()


def finished(server: GunicornServer, token: str, job_id: str, timeout: float = 10) -> dict:
    """The job once it has ended (read with the owner's token)."""
    state: dict = {}

    def done() -> bool:
        state.update(HTTP.get(server.url(f"/jobs/{job_id}"), headers=bearer(token), timeout=TIMEOUT).json())
        return state.get("ended_at") is not None

    assert wait_until(done, timeout), state
    return state


def output(server: GunicornServer, token: str, job_id: str) -> bytes:
    """The whole output of a job (GET /jobs/<id>/output follows it until it ends)."""
    response = HTTP.get(server.url(f"/jobs/{job_id}/output"), headers=bearer(token), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.content


def assert_error(response: httpx.Response, status: int, code: str | None = None, contains: str = "") -> dict:
    """A JSON error answer with this status (and code, and text in the message)."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body
    if code is not None:
        assert body["error"] == code, body
    assert contains in body["message"], body
    return body


def cookie_from(response: httpx.Response) -> tuple[str, str]:
    """The session cookie's value and its whole Set-Cookie line."""
    for line in response.headers.get_list("set-cookie"):
        name, _, rest = line.partition("=")
        if name.strip() == COOKIE:
            return rest.split(";", 1)[0], line
    raise AssertionError(f"no {COOKIE} cookie in {response.headers.get_list('set-cookie')}")


def login(server: GunicornServer, body: dict) -> str:
    """POST /login and return the session cookie value."""
    response = HTTP.post(server.url("/login"), json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return cookie_from(response)[0]


def audit_records(path: Path) -> list[dict]:
    """Every line of the audit log, each of which must be one JSON object."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        assert isinstance(record, dict) and "audit" in record, line
        records.append(record)
    return records


def wait_for_audit(path: Path, predicate, timeout: float = 5) -> list[dict]:
    """Audit records matching ``predicate``, waiting for them to be written."""
    found: list[dict] = []

    def seen() -> bool:
        found[:] = [r for r in audit_records(path) if predicate(r)]
        return bool(found)

    wait_until(seen, timeout)
    return found


def pause(seconds: float) -> None:
    time.sleep(seconds)
