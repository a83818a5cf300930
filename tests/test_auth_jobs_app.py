"""Access decisions about jobs, answered by the app in-process (Flask's test client; tests/app_client.py):
named actions' parameters, programs off the allowlist, forged tickets.

The same settings and credentials as tests/test_auth_jobs.py, which keeps what needs the real server (jobs
that run, streams, the audit log, rate limits over time).
"""

from __future__ import annotations

import json

import pytest
from itsdangerous import URLSafeTimedSerializer

from .app_client import AppClient, app_client
from .auth_support import ACTIONS, ALLOWED, assert_error, bearer
from .test_auth_jobs import CREDS, ROLES, SECRET, T


@pytest.fixture(scope="module")
def srv(tmp_path_factory) -> AppClient:
    settings = {
        **CREDS.env(),
        "SSECMD_ROLES": json.dumps(ROLES),
        "SSECMD_ACTIONS": json.dumps(ACTIONS),
        "SSECMD_ALLOWED_COMMANDS": ALLOWED,
        "SSECMD_SESSION_SECRET": SECRET,
    }
    return app_client(tmp_path_factory.mktemp("auth-jobs-app"), settings)


@pytest.fixture(scope="module")
def alice_done(srv) -> str:
    """A finished job of alice's (stored as it ran: nothing runs in-process)."""
    return srv.finished_job(["printf", "%s\\n", "ticket output"], owner="alice", output=b"ticket output\n").id


@pytest.fixture(scope="module")
def alice_running(srv) -> str:
    """Another job of alice's, for tickets pointed at it."""
    return srv.finished_job(["sleep", "60"], owner="alice").id


def _ticket(srv: AppClient, job_id: str, token: str) -> dict:
    response = srv.post(f"/jobs/{job_id}/tickets", headers=bearer(token))
    assert response.status_code == 201, response.text
    return response.json()


def _run_action(srv: AppClient, token: str, name: str, params):
    return srv.post("/jobs", json={"action": name, "params": params}, headers=bearer(token))


def _get(srv: AppClient, path: str, token: str | None = None):
    return srv.get(path, headers=bearer(token) if token else {})


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


@pytest.mark.parametrize(
    ("name", "params", "param"),
    [
        ("greet", {"name": "Bob"}, "name"),  # pattern mismatch
        ("greet", {"name": "abcdefghijk"}, "name"),
        ("greet", {"name": ""}, "name"),
        ("greet", {"name": "bob\n"}, "name"),
        ("count", {"n": 0}, "n"),  # out of range
        ("count", {"n": 6}, "n"),
        ("count", {"n": -1}, "n"),
        ("count", {"n": 10**30}, "n"),
        ("pick", {"env": "dev"}, "env"),  # not in choices
        ("pick", {"env": "PROD"}, "env"),
        ("pick", {"env": "prod "}, "env"),
        ("greet", {}, "name"),  # missing
        ("greet", None, "name"),
        ("count", {}, "n"),
        ("greet", {"name": "bob", "extra": "x"}, "extra"),  # unknown
        ("pick", {"env": "prod", "argv": ["sh"]}, "argv"),
        ("count", {"n": 2.5}, "n"),  # wrong types
        ("count", {"n": True}, "n"),
        ("count", {"n": "3; id"}, "n"),
        ("count", {"n": "0x3"}, "n"),
        ("count", {"n": [3]}, "n"),
        ("greet", {"name": 5}, "name"),
        ("greet", {"name": ["bob"]}, "name"),
        ("greet", {"name": {"x": 1}}, "name"),
        ("pick", {"env": ["prod"]}, "env"),
        ("pick", {"env": None}, "env"),
        ("greet", ["bob"], "params"),
        ("greet", "name=bob", "params"),
    ],
)
def test_bad_parameter_is_400_naming_it(srv, name, params, param):
    body = assert_error(_run_action(srv, T["alice"], name, params), 400, "bad_request")
    assert f"'{param}'" in body["message"], body


def test_unknown_or_malformed_action_requests_are_400(srv):
    for body in (
        {"action": "nope"},
        {"action": "../greet"},
        {"action": ["greet"]},
        {"action": "greet", "params": {"name": "bob"}, "argv": ["echo"]},
        {"action": "greet", "params": {"name": "bob"}, "command": "echo"},
        {"params": {"name": "bob"}},
    ):
        response = srv.post("/jobs", json=body, headers=bearer(T["rita"]))
        assert_error(response, 400, "bad_request")


@pytest.mark.parametrize(
    "program",
    ["sh", "/bin/sh", "bash", "touch", "env", "/usr/bin/env", "../../bin/sh", "/usr/bin/../bin/sh", "./echo",
     "echo;id", "echo id", "$(id)", "/bin//echo", "/tmp/../bin/echo", "ECHO", "echo\n"],
)
def test_programs_off_the_allowlist_are_refused(srv, program):
    before = _ids(_get(srv, "/jobs", T["boss"]))
    response = srv.post("/jobs", json={"argv": [program, "-c", "id"]}, headers=bearer(T["boss"]))
    assert response.status_code == 403, response.text
    assert _ids(_get(srv, "/jobs", T["boss"])) == before


def test_forged_tickets_are_401(srv, alice_done, alice_running):
    real = _ticket(srv, alice_done, T["alice"])["ticket"]
    rest = real.partition(".")[2]
    serializer = URLSafeTimedSerializer("x")
    forged = [
        real[:-2] + ("A" if real[-2] != "A" else "B") + real[-1],
        serializer.dump_payload({"j": alice_running, "u": "alice"}).decode() + "." + rest,  # re-pointed payload
        URLSafeTimedSerializer("not-the-secret", salt="ssecmd-ticket").dumps({"j": alice_done, "u": "alice"}),
        URLSafeTimedSerializer(SECRET, salt="ssecmd-session").dumps({"j": alice_done, "u": "alice"}),
        URLSafeTimedSerializer(SECRET, salt="ssecmd-session").dumps({"u": "alice"}),  # a session cookie
        "",
        "garbage",
        real + real,
    ]
    for value in forged:
        response = srv.get(f"/jobs/{alice_done}/output", params={"ticket": value})
        assert_error(response, 401, "invalid_ticket")




def test_job_pages_show_only_ones_own_and_user_filters_only_for_those_who_see_all(srv, alice_done):
    bobs = srv.finished_job(["echo", "bob"], owner="bob").id
    mine = _get(srv, "/jobs?limit=10", T["bob"]).json()
    assert [job["id"] for job in mine["jobs"]] == [bobs] and sum(mine["counts"].values()) == 1
    refused = _get(srv, "/jobs?user=alice", T["bob"])
    assert refused.status_code == 403 and refused.json()["parameter"] == "user"
    assert _get(srv, "/jobs?user=bob", T["bob"]).json()["jobs"] == mine["jobs"]
    alices = _ids(_get(srv, "/jobs?user=alice", T["boss"]))
    assert alice_done in alices and bobs not in alices
