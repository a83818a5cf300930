"""Access control against the real gunicorn server: who sees and cancels which job, stream tickets,
named actions, injection attempts, per-user rate limits and the audit log.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from .auth_support import (
    ACTIONS,
    ALLOWED,
    HTTP,
    TIMEOUT,
    Credentials,
    assert_error,
    audit_records,
    bearer,
    finished,
    output,
    pause,
    start,
    wait_for_audit,
)
from .raw_http import raw_request, request_bytes
from .server import GunicornServer
from .sse_client import collect, output_of

SECRET = "test-session-secret-for-auth-jobs"


def _credentials() -> Credentials:
    creds = Credentials()
    for user in ("alice", "bob"):
        creds.add_token(user, ["operator"])
    creds.add_token("boss", ["admin"])
    creds.add_token("vera", ["viewer"])
    creds.add_token("rita", ["runner"])
    creds.add_token("gina", ["greeter"])
    return creds


CREDS = _credentials()
T = CREDS.tokens
ROLES = {"greeter": {"actions": ["greet"]}}


@pytest.fixture(scope="module")
def audit_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit") / "audit.log"


@pytest.fixture(scope="module")
def srv(tmp_path_factory, audit_path):
    settings = {
        **CREDS.env(),
        "SSECMD_ROLES": json.dumps(ROLES),
        "SSECMD_ACTIONS": json.dumps(ACTIONS),
        "SSECMD_ALLOWED_COMMANDS": ALLOWED,
        "SSECMD_SESSION_SECRET": SECRET,
        "SSECMD_AUDIT_LOG": str(audit_path),
        "SSECMD_REFUSED_LOG_INTERVAL": "0",  # every refusal in full (collapsing: tests/test_log_amplification.py)
        "SSECMD_HEARTBEAT_INTERVAL": "1",
        "SSECMD_ALLOW_STDIN": "true",
    }
    server = GunicornServer(tmp_path_factory.mktemp("auth-jobs"), settings).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def marker(tmp_path_factory) -> Path:
    """A file that only an injected command could create."""
    path = tmp_path_factory.mktemp("marker") / "pwned"
    yield path
    assert not path.exists(), "an injected command ran"


def _get(srv, path: str, token: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    headers = {**(bearer(token) if token else {}), **(headers or {})}
    return HTTP.get(srv.url(path), headers=headers, timeout=TIMEOUT)


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


def _cancel(srv, job_id: str, token: str) -> httpx.Response:
    return HTTP.delete(srv.url(f"/jobs/{job_id}"), headers=bearer(token), timeout=TIMEOUT)


# Ownership.


@pytest.fixture(scope="module")
def alice_running(srv) -> str:
    """A long job of alice's that stays running for the ownership tests."""
    job = start(srv, T["alice"], {"argv": ["sleep", "60"]})
    yield job["id"]
    _cancel(srv, job["id"], T["boss"])


def test_another_users_job_is_404_everywhere(srv, alice_running):
    unknown = "0123456789abcdef"
    for method, suffix in [("GET", ""), ("GET", "/events"), ("GET", "/output"), ("DELETE", ""), ("POST", "/tickets")]:
        theirs = HTTP.request(method, srv.url(f"/jobs/{alice_running}{suffix}"), headers=bearer(T["bob"]),
                               timeout=TIMEOUT)
        body = assert_error(theirs, 404, "job_not_found")
        missing = HTTP.request(method, srv.url(f"/jobs/{unknown}{suffix}"), headers=bearer(T["bob"]),
                                timeout=TIMEOUT)
        # Indistinguishable from a job that does not exist.
        assert body["message"].replace(alice_running, unknown) == missing.json()["message"]
    state = _get(srv, f"/jobs/{alice_running}", T["alice"]).json()
    assert state["state"] == "running"


def test_jobs_are_listed_to_their_owner_and_to_roles_that_see_all(srv, alice_running):
    assert alice_running in _ids(_get(srv, "/jobs", T["alice"]))
    assert alice_running not in _ids(_get(srv, "/jobs", T["bob"]))
    assert alice_running not in _ids(_get(srv, "/jobs?state=running", T["bob"]))
    assert alice_running not in _ids(_get(srv, "/jobs", T["rita"]))
    assert alice_running in _ids(_get(srv, "/jobs", T["boss"]))
    assert alice_running in _ids(_get(srv, "/jobs", T["vera"]))
    for token in (T["boss"], T["vera"]):
        response = _get(srv, f"/jobs/{alice_running}", token)
        assert response.status_code == 200 and response.json()["owner"] == "alice"


def test_viewer_reads_everything_but_runs_and_cancels_nothing(srv, alice_running):
    assert _get(srv, f"/jobs/{alice_running}", T["vera"]).json()["owner"] == "alice"
    before = _ids(_get(srv, "/jobs", T["boss"]))
    assert_error(HTTP.post(srv.url("/jobs"), json={"argv": ["echo", "x"]}, headers=bearer(T["vera"]),
                            timeout=TIMEOUT), 403, "forbidden")
    assert_error(HTTP.post(srv.url("/jobs"), json={"action": "greet", "params": {"name": "x"}},
                            headers=bearer(T["vera"]), timeout=TIMEOUT), 403, "forbidden")
    assert_error(_get(srv, "/run?command=echo%20x", T["vera"]), 403, "forbidden")
    assert _ids(_get(srv, "/jobs", T["boss"])) == before
    assert_error(_cancel(srv, alice_running, T["vera"]), 403, "forbidden")
    assert _get(srv, f"/jobs/{alice_running}", T["alice"]).json()["state"] == "running"


def test_bob_cannot_cancel_alices_job_but_admin_can_cancel_bobs(srv):
    job = start(srv, T["bob"], {"argv": ["sleep", "60"]})
    assert_error(_cancel(srv, job["id"], T["alice"]), 404)
    assert_error(_cancel(srv, job["id"], T["rita"]), 404)
    response = _cancel(srv, job["id"], T["boss"])
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    # Who cancelled it, in its metadata and in its exit event (the console's badge names them).
    assert response.json()["cancelled_by"] == "boss"
    events = collect(srv.url(f"/jobs/{job['id']}/events"), headers=bearer(T["bob"]))
    assert json.loads(events[-1].data)["cancelled_by"] == "boss"


def test_owner_cancels_own_job(srv):
    job = start(srv, T["bob"], {"argv": ["sleep", "60"]})
    response = _cancel(srv, job["id"], T["bob"])
    assert response.status_code == 200 and response.json()["state"] == "cancelled", response.text
    assert response.json()["cancelled_by"] == "bob"


# Stream tickets.


def _ticket(srv, job_id: str, token: str) -> dict:
    response = HTTP.post(srv.url(f"/jobs/{job_id}/tickets"), headers=bearer(token), timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def alice_done(srv) -> str:
    job = start(srv, T["alice"], {"argv": ["printf", "%s\\n", "ticket output", "line two"]})
    finished(srv, T["alice"], job["id"])
    return job["id"]


def test_ticket_opens_events_and_output_without_other_credentials(srv, alice_done):
    ticket = _ticket(srv, alice_done, T["alice"])
    assert ticket["urls"]["events"] == f"/jobs/{alice_done}/events?ticket={ticket['ticket']}"
    events = collect(srv.url(ticket["urls"]["events"]))
    assert output_of(events) == "ticket output\nline two\n"
    # curl-style: nothing but the URL.
    response = HTTP.get(srv.url(ticket["urls"]["output"]), timeout=TIMEOUT)
    assert response.status_code == 200 and response.content == b"ticket output\nline two\n"
    # Built by hand from the ticket alone; with a browser's cross-site EventSource headers too.
    response = HTTP.get(srv.url(f"/jobs/{alice_done}/output"), params={"ticket": ticket["ticket"]},
                         headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://elsewhere.example"},
                         timeout=TIMEOUT)
    assert response.status_code == 200 and response.content == b"ticket output\nline two\n"


def test_ticket_follows_a_running_job(srv):
    running = start(srv, T["alice"], {"argv": ["seq", "3"]})
    ticket = _ticket(srv, running["id"], T["alice"])
    assert output_of(collect(srv.url(ticket["urls"]["events"]))) == "1\n2\n3\n"


def test_ticket_is_refused_for_another_job(srv, alice_done, alice_running):
    ticket = _ticket(srv, alice_done, T["alice"])["ticket"]
    for suffix in ("/events", "/output"):
        response = _get(srv, f"/jobs/{alice_running}{suffix}?ticket={ticket}")
        assert_error(response, 403, "forbidden", "another job")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/jobs"),
        ("GET", "/jobs"),
        ("GET", "/jobs/{job}"),
        ("DELETE", "/jobs/{job}"),
        ("POST", "/jobs/{job}/tickets"),
        ("POST", "/jobs/{job}/events"),
        ("DELETE", "/jobs/{job}/events"),
        ("GET", "/run?command=echo%20x"),
        ("GET", "/actions"),
        ("GET", "/whoami"),
    ],
)
def test_ticket_opens_nothing_else(srv, alice_running, method, path):
    ticket = _ticket(srv, alice_running, T["alice"])["ticket"]
    before = _ids(_get(srv, "/jobs", T["boss"]))
    url = srv.url(path.format(job=alice_running))
    url += ("&" if "?" in url else "?") + "ticket=" + ticket
    kwargs = {"json": {"argv": ["echo", "x"]}} if method == "POST" else {}
    response = HTTP.request(method, url, timeout=TIMEOUT, **kwargs)
    assert response.status_code in (403, 405), response.text
    assert _ids(_get(srv, "/jobs", T["boss"])) == before
    assert _get(srv, f"/jobs/{alice_running}", T["alice"]).json()["state"] == "running"


def test_a_ticket_cannot_create_tickets_even_with_a_token_alongside(srv, alice_running):
    ticket = _ticket(srv, alice_running, T["alice"])["ticket"]
    response = HTTP.post(srv.url(f"/jobs/{alice_running}/tickets?ticket={ticket}"), timeout=TIMEOUT)
    assert_error(response, 403, "forbidden")
    # A ticket in the URL wins over the Authorization header: still only the read grant.
    response = HTTP.delete(srv.url(f"/jobs/{alice_running}?ticket={ticket}"), headers=bearer(T["alice"]),
                            timeout=TIMEOUT)
    assert_error(response, 403)
    assert _get(srv, f"/jobs/{alice_running}", T["alice"]).json()["state"] == "running"


def test_tickets_only_for_jobs_you_may_see(srv, alice_done):
    assert_error(HTTP.post(srv.url(f"/jobs/{alice_done}/tickets"), headers=bearer(T["bob"]), timeout=TIMEOUT), 404)
    # A viewer sees every job, so may share it.
    ticket = _ticket(srv, alice_done, T["vera"])
    assert HTTP.get(srv.url(ticket["urls"]["output"]), timeout=TIMEOUT).status_code == 200


# Named actions.


def _run_action(srv, token: str, name: str, params) -> httpx.Response:
    return HTTP.post(srv.url("/jobs"), json={"action": name, "params": params}, headers=bearer(token),
                      timeout=TIMEOUT)


def test_actions_are_listed_with_their_parameters_filtered_by_role(srv):
    everything = _get(srv, "/actions", T["alice"]).json()
    assert [a["name"] for a in everything["actions"]] == sorted(ACTIONS)
    greet = next(a for a in everything["actions"] if a["name"] == "greet")
    assert greet["description"] == "Say hello" and greet["argv"] == ["echo", "hello", "{name}"]
    assert greet["params"] == [{"name": "name", "type": "string", "description": "", "pattern": "[a-z]{1,10}",
                                "max_length": 256, "required": True}]
    count = next(a for a in everything["actions"] if a["name"] == "count")
    assert count["params"][0] | {"description": ""} == {"name": "n", "type": "integer", "description": "", "min": 1,
                                                         "max": 5, "required": True}
    pick = next(a for a in everything["actions"] if a["name"] == "pick")
    assert pick["params"][0]["choices"] == ["staging", "prod"]
    assert "echo" in everything["commands"]

    runner = _get(srv, "/actions", T["rita"]).json()
    assert [a["name"] for a in runner["actions"]] == sorted(ACTIONS) and runner["commands"] == []
    greeter = _get(srv, "/actions", T["gina"]).json()
    assert [a["name"] for a in greeter["actions"]] == ["greet"] and greeter["commands"] == []
    viewer = _get(srv, "/actions", T["vera"]).json()
    assert viewer == {"actions": [], "commands": [], "stdin_allowed": True}  # allow_stdin is on here


@pytest.mark.parametrize(
    ("name", "params", "argv", "out"),
    [
        ("greet", {"name": "bob"}, ["echo", "hello", "bob"], b"hello bob\n"),
        ("count", {"n": 3}, ["seq", "3"], b"1\n2\n3\n"),
        ("count", {"n": "5"}, ["seq", "5"], b"1\n2\n3\n4\n5\n"),
        ("pick", {"env": "prod"}, ["echo", "prod"], b"prod\n"),
    ],
)
def test_running_an_action(srv, name, params, argv, out):
    for token in (T["alice"], T["rita"]):
        response = _run_action(srv, token, name, params)
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["argv"] == argv and job["action"] == name
        assert output(srv, token, job["id"]) == out
        assert finished(srv, token, job["id"])["exit_code"] == 0


@pytest.mark.parametrize(("extra", "timeout"), [({}, 60), ({"timeout": None}, 60), ({"timeout": 30}, 30)])
def test_an_actions_timeout_is_the_ceiling_and_null_means_the_actions_own(srv, extra, timeout):
    response = HTTP.post(srv.url("/jobs"), json={"action": "count", "params": {"n": 1}, **extra},
                         headers=bearer(T["rita"]))
    assert response.status_code == 201, response.text
    assert response.json()["timeout"] == timeout
    assert_error(HTTP.post(srv.url("/jobs"), json={"action": "count", "params": {"n": 1}, "timeout": 61},
                           headers=bearer(T["rita"])), 400, contains="must not exceed this action's 60 seconds")


@pytest.mark.parametrize(
    "value",
    ["a; rm -rf /", "$(id)", "`id`", "x\ny", "--help", "-n", "a b  c", "{text}", "{0}", "%s%s%n", "'quoted'",
     "| cat /etc/passwd", "> /tmp/x", "&& id", "\\", "é ✓", " "],
)
def test_parameters_are_refused_or_one_literal_argv_item(srv, marker, value):
    # The pattern-checked parameter refuses every one of these.
    body = assert_error(_run_action(srv, T["rita"], "greet", {"name": value}), 400)
    assert "'name'" in body["message"]
    # A free string parameter passes it as exactly one argv item, never interpreted.
    for hostile in dict.fromkeys((value, value.replace("/tmp/x", str(marker)))):
        response = _run_action(srv, T["rita"], "say", {"text": hostile})
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["argv"] == ["printf", "[%s]\\n", hostile]
        assert output(srv, T["rita"], job["id"]) == f"[{hostile}]\n".encode()


def test_runner_may_run_actions_but_not_free_text(srv):
    before = _ids(_get(srv, "/jobs", T["boss"]))
    assert_error(HTTP.post(srv.url("/jobs"), json={"command": "echo hi"}, headers=bearer(T["rita"]),
                            timeout=TIMEOUT), 403, "forbidden")
    assert_error(HTTP.post(srv.url("/jobs"), json={"argv": ["echo", "hi"]}, headers=bearer(T["rita"]),
                            timeout=TIMEOUT), 403, "forbidden")
    assert_error(_get(srv, "/run?command=echo%20hi", T["rita"]), 403, "forbidden")
    assert _ids(_get(srv, "/jobs", T["boss"])) == before
    assert _run_action(srv, T["rita"], "greet", {"name": "ok"}).status_code == 201
    # A role limited to one action.
    assert _run_action(srv, T["gina"], "greet", {"name": "ok"}).status_code == 201
    assert_error(_run_action(srv, T["gina"], "count", {"n": 1}), 403, "forbidden")
    assert_error(HTTP.post(srv.url("/jobs"), json={"argv": ["echo"]}, headers=bearer(T["gina"]), timeout=TIMEOUT),
                 403)


# Injection through every other input.


def _shell_tricks(marker: Path) -> list[str]:
    m = shlex.quote(str(marker))
    return [
        f"echo a; touch {m}",
        f"echo a && touch {m}",
        f"echo a || touch {m}",
        f"echo a | tee {m}",
        f"echo $(touch {m})",
        f"echo `touch {m}`",
        f"echo a > {m}",
        f"echo a >> {m}",
        f"cat < {m}",
        f"echo a & touch {m}",
        f"echo a\ntouch {m}",
        f"echo ${{IFS}}x;touch${{IFS}}{m}",
        f"true; touch {m}",
    ]


def test_command_text_is_never_given_to_a_shell(srv, marker):
    for command in _shell_tricks(marker):
        expected_argv = shlex.split(command)
        response = HTTP.post(srv.url("/jobs"), json={"command": command}, headers=bearer(T["alice"]),
                              timeout=TIMEOUT)
        if expected_argv[0] not in ALLOWED.split():
            assert_error(response, 403, "command_not_allowed")  # "true;" is not "true"
            continue
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["argv"] == expected_argv
        out = output(srv, T["alice"], job["id"])
        if expected_argv[0] == "echo":
            assert out == (" ".join(expected_argv[1:]) + "\n").encode(), (command, out)
        # The same through GET /run.
        events = collect(srv.url("/run?command=" + quote(command, safe="")), headers=bearer(T["alice"]))
        if expected_argv[0] == "echo":
            assert output_of(events, "stdout") == " ".join(expected_argv[1:]) + "\n"
    assert not marker.exists()


def test_argv_items_are_literal(srv, marker):
    items = [";", f"touch {marker}", "$(touch " + str(marker) + ")", "`id`", "|", "&&", ">", str(marker), "<", "*",
             "~", "$HOME", "\\n"]
    job = start(srv, T["alice"], {"argv": ["echo", *items]})
    assert output(srv, T["alice"], job["id"]) == (" ".join(items) + "\n").encode()
    assert not marker.exists()


def test_last_event_id_and_path_tricks_run_nothing(srv, alice_done, marker):
    before = _ids(_get(srv, "/jobs", T["boss"]))
    for value in (f"1; touch {marker}", f"$(touch {marker})", "`id`", "../1", "1 2", "-1", "0x10"):
        response = HTTP.get(srv.url(f"/jobs/{alice_done}/events"), headers=bearer(T["alice"], **{
            "Last-Event-ID": value}), timeout=TIMEOUT)
        assert_error(response, 400, "bad_request")
    for path in (
        b"/jobs/..%2F..%2Fetc%2Fpasswd/events",
        b"/jobs/../run?command=echo%20traversal",
        b"/jobs/%2E%2E/run?command=echo%20traversal",
        b"/jobs/" + alice_done.encode() + b"/../../run?command=echo%20traversal",
        b"/jobs/$(touch%20" + quote(str(marker)).encode() + b")",
        b"/jobs/;id/output",
        b"/jobs/%00/output",
    ):
        raw = raw_request(srv.port, request_bytes("GET", path, {"Authorization": f"Bearer {T['alice']}".encode()}))
        assert raw.status in (400, 404), (path, raw)
        assert b"text/event-stream" not in raw.headers.get("content-type", "").encode()
    assert _ids(_get(srv, "/jobs", T["boss"])) == before
    assert not marker.exists()


def test_hostile_auth_headers_run_nothing(srv, marker):
    before = _ids(_get(srv, "/jobs", T["boss"]))
    hostile = [
        {"X-Forwarded-User": "boss"},  # no trusted proxy here: ignored
        {"X-Forwarded-User": f"$(touch {marker})"},
        {"Cookie": f"ssecmd_session=$(touch {marker})"},
        {"Authorization": f"Bearer $(touch {marker})"},
        {"Authorization": f"Bearer {T['alice']}; touch {marker}"},
    ]
    for headers in hostile:
        response = HTTP.post(srv.url("/jobs"), json={"argv": ["echo", "x"]}, headers=headers, timeout=TIMEOUT)
        assert_error(response, 401)
        assert_error(_get(srv, "/run?command=echo%20x", headers=headers), 401)
    assert _ids(_get(srv, "/jobs", T["boss"])) == before
    assert not marker.exists()


# Audit log.


def test_audit_records_job_start_and_end(srv, audit_path):
    job = start(srv, T["alice"], {"argv": ["printf", "%s", "twelve bytes"]})
    finished(srv, T["alice"], job["id"])
    starts = wait_for_audit(audit_path, lambda r: r["audit"] == "job_start" and r.get("job") == job["id"])
    ends = wait_for_audit(audit_path, lambda r: r["audit"] == "job_end" and r.get("job") == job["id"])
    assert len(starts) == 1 and len(ends) == 1, (starts, ends)
    assert starts[0]["user"] == "alice" and starts[0]["addr"] == "127.0.0.1" and starts[0]["via"] == "token"
    assert starts[0]["argv"] == ["printf", "%s", "twelve bytes"]
    assert ends[0]["user"] == "alice" and ends[0]["exit_code"] == 0 and ends[0]["output_bytes"] == 12
    action = _run_action(srv, T["rita"], "pick", {"env": "staging"}).json()
    record = wait_for_audit(audit_path, lambda r: r["audit"] == "job_start" and r.get("job") == action["id"])[0]
    assert record["action"] == "pick" and record["params"] == {"env": "staging"} and record["user"] == "rita"


def test_input_is_for_those_who_may_cancel_and_audited_by_size(srv, audit_path):
    job = start(srv, T["alice"], {"argv": ["cat"], "stdin": True})
    url = srv.url(f"/jobs/{job['id']}/input")

    def write(token: str, data: bytes = b"hunter2 answer\n") -> httpx.Response:
        return HTTP.post(url, content=data, headers={**bearer(token), "Content-Type": "text/plain"}, timeout=TIMEOUT)

    assert_error(write(T["bob"]), 404, "job_not_found")  # another operator's job: not even confirmed
    assert_error(write(T["vera"]), 403, "forbidden")  # a viewer sees it but may not cancel it
    assert write(T["boss"]).status_code == 200  # admins cancel (and write to) every job
    assert write(T["alice"], b"from alice\n").status_code == 200
    closed = HTTP.post(url, json={"eof": True}, headers=bearer(T["alice"]), timeout=TIMEOUT)
    assert closed.status_code == 200, closed.text
    finished(srv, T["alice"], job["id"])
    output = HTTP.get(srv.url(f"/jobs/{job['id']}/output"), headers=bearer(T["alice"]), timeout=TIMEOUT).content
    assert output == b"hunter2 answer\nfrom alice\n"
    wait_for_audit(audit_path, lambda r: r["audit"] == "job_input" and r.get("eof") and r.get("job") == job["id"])
    records = [r for r in audit_records(audit_path) if r["audit"] == "job_input" and r.get("job") == job["id"]]
    assert [(r["user"], r["bytes"], r["eof"]) for r in records] == [
        ("boss", 15, False), ("alice", 11, False), ("alice", 0, True)
    ]
    assert "hunter2" not in audit_path.read_text()


def test_audit_records_refusals_with_a_reason(srv, audit_path):
    HTTP.get(srv.url("/jobs?audit-probe-401"), timeout=TIMEOUT)
    HTTP.post(srv.url("/jobs"), json={"argv": ["echo", "audit-probe-403"]}, headers=bearer(T["vera"]),
               timeout=TIMEOUT)
    HTTP.get(srv.url("/whoami"), headers={"Authorization": "Bearer audit-probe-bad-token"}, timeout=TIMEOUT)
    refused = wait_for_audit(audit_path, lambda r: r["audit"] == "refused" and r.get("status") == 401)
    assert any(r["path"] == "/jobs" and r["method"] == "GET" and r["reason"] for r in refused), refused
    assert any(r["path"] == "/whoami" and "token" in r["reason"] for r in refused), refused
    assert all(r["addr"] == "127.0.0.1" for r in refused)
    forbidden = wait_for_audit(audit_path, lambda r: r["audit"] == "refused" and r.get("status") == 403)
    assert any(r["user"] == "vera" and "may not run" in r["reason"] for r in forbidden), forbidden


def test_audit_lines_cannot_be_forged_through_argv(srv, audit_path):
    fake = '"}\n{"audit":"job_start","user":"nobody-real","argv":["forged"]}\n'
    job = start(srv, T["alice"], {"argv": ["echo", fake]})
    finished(srv, T["alice"], job["id"])
    records = audit_records(audit_path)  # every line is one JSON object
    assert not any(r.get("user") == "nobody-real" for r in records)
    assert any(r.get("job") == job["id"] and r.get("argv") == ["echo", fake] for r in records)


def test_every_audited_start_ran_an_allowlisted_program(srv, audit_path):
    allowed = set(ALLOWED.split())
    starts = [r for r in audit_records(audit_path) if r["audit"] == "job_start"]
    assert starts
    assert {r["argv"][0] for r in starts} <= allowed


# Rate limits and expired tickets, on a server of their own.


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    creds = Credentials()
    for user in ("rl1", "rl2", "tix"):
        creds.add_token(user, ["operator"])
    audit = tmp_path_factory.mktemp("limited-audit") / "audit.log"
    settings = {
        **creds.env(),
        "SSECMD_ALLOWED_COMMANDS": ALLOWED,
        "SSECMD_RATE_LIMIT_PER_MINUTE": "2",
        "SSECMD_RATE_LIMIT_BURST": "2",
        "SSECMD_TICKET_TTL": "1",
        "SSECMD_AUDIT_LOG": str(audit),
        "SSECMD_REFUSED_LOG_INTERVAL": "0",
    }
    server = GunicornServer(tmp_path_factory.mktemp("limited"), settings).start()
    yield server, creds.tokens, audit
    server.stop()


def test_third_start_by_the_same_user_is_429(limited):
    server, tokens, audit = limited
    start(server, tokens["rl1"], {"argv": ["true"]})
    start(server, tokens["rl1"], {"argv": ["true"]})
    response = HTTP.post(server.url("/jobs"), json={"argv": ["true"]}, headers=bearer(tokens["rl1"]),
                          timeout=TIMEOUT)
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    run = HTTP.get(server.url("/run?command=true"), headers=bearer(tokens["rl1"]), timeout=TIMEOUT)
    assert_error(run, 429, "rate_limited")
    assert int(run.headers["retry-after"]) >= 1
    # Another user is unaffected.
    start(server, tokens["rl2"], {"argv": ["true"]})
    start(server, tokens["rl2"], {"argv": ["true"]})
    refused = wait_for_audit(audit, lambda r: r["audit"] == "refused" and r.get("status") == 429)
    assert len(refused) == 2 and all(r["user"] == "rl1" and r["reason"] for r in refused), refused


def test_expired_ticket_is_401(limited):
    server, tokens, _ = limited
    job = start(server, tokens["tix"], {"argv": ["echo", "soon gone"]})
    ticket = HTTP.post(server.url(f"/jobs/{job['id']}/tickets"), headers=bearer(tokens["tix"]),
                        timeout=TIMEOUT).json()
    assert HTTP.get(server.url(ticket["urls"]["output"]), timeout=TIMEOUT).content == b"soon gone\n"
    pause(2.3)  # timestamps are whole seconds: a ttl of 1 s has surely passed
    for url in (ticket["urls"]["output"], ticket["urls"]["events"]):
        assert_error(HTTP.get(server.url(url), timeout=TIMEOUT), 401, "invalid_ticket", "expired")
