"""Malformed and hostile requests, answered by the app in-process (Flask's test client; tests/app_client.py).

House rule: every one gets a 4xx with a JSON body ``{"error": code, "message": reason}``
(never a 500, HTML or a traceback), starts nothing, and the service keeps serving
with everything it already stored. Tests run in file order: a finished baseline
job is in the store first, and the last test checks it is intact and that no
request started anything. What only the real server can show (gunicorn's own
refusals, raw sockets, chunked bodies, a job that really ran) is in
tests/test_bad_input.py.
"""

from __future__ import annotations

import json

import pytest

from .app_client import AppClient, app_client
from .test_bad_input import BASELINE_ARGV, BASELINE_OUTPUT, JSON, assert_json_error

# Fixtures.


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> AppClient:
    return app_client(tmp_path_factory.mktemp("bad-input-app"))


@pytest.fixture(scope="module", autouse=True)
def baseline(client) -> dict:
    """A finished job stored before any hostile request; the last test checks it survived intact."""
    job = client.finished_job(BASELINE_ARGV, output=BASELINE_OUTPUT)
    answer = client.get(f"/jobs/{job.id}")
    assert answer.status_code == 200 and answer.json()["state"] == "exited", answer.text
    return answer.json()


# GET /run: the command and timeout query parameters.


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "missing query parameter 'command'"),
        ("timeout=5", "missing query parameter 'command'"),
        ("command=", "command is empty"),
        ("command=%20%20", "command is empty"),
        ("command=%09%0A%0D%20", "command is empty"),
        ("command=++", "command is empty"),
        ("command=''", "the program name is empty"),
        ("command=echo%20'a", "cannot be split"),
        ('command=echo%20"a', "cannot be split"),
        ("command=echo%20a%5C", "cannot be split"),
        ("command=" + "a%20" * 300, "more than 256 items"),
        ("command=echo%00x", "NUL"),
        ("command=%00", "NUL"),
        ("command=echo%20%FF", "not valid UTF-8"),
        ("command=%C3%28", "not valid UTF-8"),
        ("command=%C0%AF", "not valid UTF-8"),  # overlong '/'
        ("command=%ED%A0%80", "not valid UTF-8"),  # an encoded surrogate
        ("command=echo&timeout=x", "timeout must be a number"),
        ("command=echo&timeout=", "timeout must be a number"),
        ("command=echo&timeout=true", "timeout must be a number"),
        ("command=echo&timeout=0x10", "timeout must be a number"),
        ("command=echo&timeout=-1", "greater than zero"),
        ("command=echo&timeout=0", "greater than zero"),
        ("command=echo&timeout=86401", "must not exceed"),
        ("command=echo&timeout=1e300", "must not exceed"),
        ("command=echo&timeout=1e999", "timeout must be a number"),
        ("command=echo&timeout=nan", "timeout must be a number"),
        ("command=echo&timeout=NaN", "timeout must be a number"),
        ("command=echo&timeout=inf", "timeout must be a number"),
        ("command=echo&timeout=-Infinity", "timeout must be a number"),
        ("command=echo&timeout=%FF", "not valid UTF-8"),
        ("command=echo&timeout=1%00", "timeout must be a number"),
    ],
)
def test_run_bad_query_is_400_json(client, query, message):
    assert_json_error(client.get("/run?" + query), 400, "bad_request", message)


def test_run_bad_query_with_head_is_400_without_a_body(client):
    response = client.head("/run?command=echo%20'a")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")


def test_run_disallowed_command_is_403_json(client):
    data = assert_json_error(client.get("/run?command=rm%20-rf%20/tmp/nothing"), 403, "command_not_allowed")
    assert "echo" in data["allowed"] and "rm" not in data["allowed"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/run?command=echo&command=ls", "'command' given more than once"),
        ("/run?command=echo&comm%61nd=ls", "'command' given more than once"),  # the same name, encoded
        ("/run?command=echo&timeout=1&timeout=2", "'timeout' given more than once"),
        ("/jobs?state=running&state=exited", "'state' given more than once"),
        ("/jobs?state=%FF", "not valid UTF-8"),
        ("/jobs?state=nonsense", "state must be one of"),
    ],
)
def test_repeated_or_bad_query_parameters_are_400_json(client, path, message):
    assert_json_error(client.get(path), 400, "bad_request", message)


def test_repeated_or_bad_query_parameters_on_job_streams_are_400_json(client, baseline):
    job = baseline["id"]
    for path, message in [
        (f"/jobs/{job}/events?last_event_id=1&last_event_id=2", "given more than once"),
        (f"/jobs/{job}/output?download=1&download=1", "given more than once"),
        (f"/jobs/{job}/output?download=%FF", "not valid UTF-8"),
    ]:
        assert_json_error(client.get(path), 400, "bad_request", message)


# POST /jobs: the JSON body.


def _nested(depth: int, leaf: str = "1") -> bytes:
    return (b"[" * depth) + leaf.encode() + (b"]" * depth)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        # Not JSON, or not an object.
        (b"", "bad_json", "not valid JSON"),
        (b"{", "bad_json", "not valid JSON"),
        (b'{"command": "echo"', "bad_json", "not valid JSON"),
        (b'{"command": "echo"} trailing', "bad_json", "not valid JSON"),
        (b"{'command': 'echo'}", "bad_json", "not valid JSON"),
        (b'\xef\xbb\xbf{"command": "echo"}', "bad_json", "not valid JSON"),  # a UTF-8 BOM
        (b"[]", "bad_request", "must be a JSON object"),
        (b'["echo"]', "bad_request", "must be a JSON object"),
        (b'"echo"', "bad_request", "must be a JSON object"),
        (b"null", "bad_request", "must be a JSON object"),
        (b"5", "bad_request", "must be a JSON object"),
        # Which fields.
        (b"{}", "bad_request", "exactly one of"),
        (b'{"timeout": 5}', "bad_request", "exactly one of"),
        (b'{"command": "echo", "argv": ["echo"]}', "bad_request", "exactly one of"),
        (b'{"command": "echo", "cwd": "/"}', "bad_request", "unknown field(s): cwd"),
        (b'{"command": "echo", "env": {"A": "1"}}', "bad_request", "unknown field(s): env"),
        (b'{"command": "echo", "command": "ls"}', "bad_json", "repeats the key 'command'"),
        (b'{"comm\\u0000and": "echo"}', "bad_request", "unknown field"),
        # Wrong types.
        (b'{"command": 5}', "bad_request", "command must be a string"),
        (b'{"command": null}', "bad_request", "command must be a string"),
        (b'{"command": ["echo"]}', "bad_request", "command must be a string"),
        (b'{"command": {"argv": ["echo"]}}', "bad_request", "command must be a string"),
        (b'{"argv": "ls"}', "bad_request", "argv must be a list of strings"),
        (b'{"argv": [1]}', "bad_request", "argv must be a list of strings"),
        (b'{"argv": ["echo", null]}', "bad_request", "argv must be a list of strings"),
        (b'{"argv": ["echo", ["x"]]}', "bad_request", "argv must be a list of strings"),
        (b'{"argv": {"0": "echo"}}', "bad_request", "argv must be a list of strings"),
        (b'{"argv": null}', "bad_request", "argv must be a list of strings"),
        # Empty, blank and unsplittable commands.
        (b'{"command": ""}', "bad_request", "command is empty"),
        (b'{"command": "   "}', "bad_request", "command is empty"),
        (b'{"command": " \\t\\n\\r "}', "bad_request", "command is empty"),
        (b'{"argv": []}', "bad_request", "command is empty"),
        (b'{"argv": [""]}', "bad_request", "program name is empty"),
        (b'{"command": "echo \'a"}', "bad_request", "cannot be split"),
        (b'{"command": "echo \\"a"}', "bad_request", "cannot be split"),
        (b'{"command": "echo a\\\\"}', "bad_request", "cannot be split"),
        # Too long, too many items.
        (json.dumps({"command": "echo " + "a" * 5000}).encode(), "bad_request", "longer than 4096"),
        (json.dumps({"argv": ["echo", "a" * 4096]}).encode(), "bad_request", "longer than 4096"),
        (json.dumps({"argv": ["echo"] + ["a"] * 300}).encode(), "bad_request", "more than 256 items"),
        (json.dumps({"command": "echo " + "a " * 300}).encode(), "bad_request", "more than 256 items"),
        # Timeouts.
        (b'{"command": "echo", "timeout": "x"}', "bad_request", "timeout must be a number"),
        (b'{"command": "echo", "timeout": "5"}', "bad_request", "timeout must be a number"),
        (b'{"command": "echo", "timeout": true}', "bad_request", "timeout must be a number"),
        (b'{"command": "echo", "timeout": false}', "bad_request", "timeout must be a number"),
        (b'{"command": "echo", "timeout": [5]}', "bad_request", "timeout must be a number"),
        (b'{"command": "echo", "timeout": {}}', "bad_request", "timeout must be a number"),
        (b'{"command": "echo", "timeout": -1}', "bad_request", "greater than zero"),
        (b'{"command": "echo", "timeout": 0}', "bad_request", "greater than zero"),
        (b'{"command": "echo", "timeout": -0.0}', "bad_request", "greater than zero"),
        (b'{"command": "echo", "timeout": 86401}', "bad_request", "must not exceed"),
        (b'{"command": "echo", "timeout": 1e300}', "bad_request", "must not exceed"),
        (b'{"command": "echo", "timeout": 1000000000000000000000000000000}', "bad_request", "must not exceed"),
        (b'{"command": "echo", "timeout": 1e999}', "bad_request", "timeout must be a number"),
        (b'{"command": "echo", "timeout": 1' + b"0" * 5000 + b"}", "bad_json", "not valid JSON"),
        (b'{"command": "echo", "timeout": NaN}', "bad_json", "NaN"),
        (b'{"command": "echo", "timeout": Infinity}', "bad_json", "Infinity"),
        (b'{"command": "echo", "timeout": -Infinity}', "bad_json", "Infinity"),
        # Deep nesting, within the body limit.
        (_nested(30000), "bad_json", "nested too deeply"),
        (b'{"a":' * 10000 + b"1" + b"}" * 10000, "bad_json", "nested too deeply"),
        (b'{"command": ' + _nested(30000, '"echo"') + b"}", "bad_json", "nested too deeply"),
        (b'{"command": ' + _nested(200, '"echo"') + b"}", "bad_request", "command must be a string"),
        # Bytes and code points that are not text.
        (b'{"command": "echo \xff"}', "bad_json", "not valid UTF-8"),
        (b'{"command": "echo \xc3\x28"}', "bad_json", "not valid UTF-8"),
        (b'{"command": "echo \xed\xa0\x80"}', "bad_json", "not valid UTF-8"),  # an encoded surrogate
        ('{"command": "echo \u00e9"}'.encode("latin-1"), "bad_json", "not valid UTF-8"),
        ('{"command": "echo"}'.encode("utf-16"), "bad_json", "not valid UTF-8"),
        (b'{"command": "echo \\u0000"}', "bad_request", "NUL"),
        (b'{"command": "\\u0000"}', "bad_request", "NUL"),
        (b'{"argv": ["echo", "a\\u0000b"]}', "bad_request", "NUL"),
        (b'{"argv": ["echo\\u0000"]}', "bad_request", "NUL"),
        (b'{"command": "echo \\ud800"}', "bad_json", "surrogate"),
        (b'{"argv": ["echo", "\\udc80"]}', "bad_json", "surrogate"),
        (b'{"argv": ["echo\\udfff"]}', "bad_json", "surrogate"),
        (b'{"command": "echo", "\\ud800": 1}', "bad_json", "surrogate"),
    ],
    ids=lambda value: value[:60].decode("utf-8", "backslashreplace") if isinstance(value, bytes) else None,
)
def test_jobs_bad_body_is_400_json(client, body, code, message):
    assert_json_error(client.post("/jobs", content=body, headers=JSON), 400, code, message)


def test_jobs_json_with_a_structured_suffix_type_is_accepted_as_json(client):
    response = client.post("/jobs", content=b'{"command": 5}', headers={"Content-Type": "application/problem+json"})
    assert_json_error(response, 400, "bad_request", "command must be a string")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {"Content-Type": "application/jsonx"},
        {"Content-Type": ""},
    ],
    ids=lambda headers: headers.get("Content-Type", "none") or "empty",
)
def test_jobs_without_a_json_content_type_is_415_json(client, headers):
    response = client.post("/jobs", content=b'{"command": "echo"}', headers=headers)
    assert_json_error(response, 415, "unsupported_media_type")


def test_jobs_form_post_is_415_json(client):
    assert_json_error(client.post("/jobs", data={"command": "echo"}), 415, "unsupported_media_type")


def test_oversized_body_is_413_json(client):
    body = json.dumps({"command": "echo hi", "pad": "x" * 70000}).encode()
    assert_json_error(client.post("/jobs", content=body, headers=JSON), 413)


# Unknown jobs and routes.


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs/nope"),
        ("DELETE", "/jobs/nope"),
        ("GET", "/jobs/nope/events"),
        ("GET", "/jobs/nope/output"),
        ("GET", "/jobs/0000000000000000"),
        ("GET", "/jobs/%FF"),
        ("GET", "/jobs/%00"),
        ("GET", "/jobs/%FF/events"),
        ("DELETE", "/jobs/%00"),
        ("GET", "/jobs/" + "x" * 3000),
    ],
)
def test_unknown_job_is_404_json(client, method, path):
    assert_json_error(client.request(method, path), 404, "job_not_found")


def test_unknown_job_with_a_garbage_resume_header_is_still_404_json(client):
    response = client.get("/jobs/nope/events", headers={"Last-Event-ID": "garbage"})
    assert_json_error(response, 404, "job_not_found")


def test_unknown_job_head_is_404_without_a_body(client):
    response = client.head("/jobs/nope")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/jobs/",
        "/run/",
        "/healthz/",
        "/jobs/nope/events/extra",
        "/jobs/..%2Fhealthz/x",
        "/.env",
        "/wp-login.php",
        "/%2e%2e/etc/passwd",
        "/%FF",
        "/%00",
    ],
)
def test_unknown_route_is_404_json(client, path):
    assert_json_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("path", "target"), [("/jobs//nope", "/jobs/nope"), ("/jobs/nope//events", "/jobs/nope/events")]
)
def test_doubled_slash_redirect_has_a_json_body(client, path, target):
    # werkzeug merges slashes with a 308 that Flask never passes to the error handlers.
    response = client.get(path)
    assert_json_error(response, 308, "permanent_redirect", target)
    assert response.headers["location"].endswith(target)
    followed = client.get(path, follow_redirects=True)
    assert_json_error(followed, 404, "job_not_found")


# Wrong methods.


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/jobs", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("DELETE", "/jobs", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("PATCH", "/jobs", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("POST", "/run", {"GET", "HEAD", "OPTIONS"}),
        ("PUT", "/run", {"GET", "HEAD", "OPTIONS"}),
        ("DELETE", "/run", {"GET", "HEAD", "OPTIONS"}),
        ("PATCH", "/jobs/{id}", {"GET", "HEAD", "OPTIONS", "DELETE"}),
        ("PUT", "/jobs/{id}", {"GET", "HEAD", "OPTIONS", "DELETE"}),
        ("POST", "/jobs/{id}", {"GET", "HEAD", "OPTIONS", "DELETE"}),
        ("PATCH", "/jobs/nope", {"GET", "HEAD", "OPTIONS", "DELETE"}),
        ("POST", "/jobs/{id}/events", {"GET", "HEAD", "OPTIONS"}),
        ("DELETE", "/jobs/{id}/output", {"GET", "HEAD", "OPTIONS"}),
        ("POST", "/healthz", {"GET", "HEAD", "OPTIONS"}),
        ("TRACE", "/jobs", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("BREW", "/jobs", {"GET", "HEAD", "OPTIONS", "POST"}),
    ],
)
def test_wrong_method_is_405_json_with_allow(client, baseline, method, path, allowed):
    response = client.request(method, path.format(id=baseline["id"]), content=b'{"command": "echo"}', headers=JSON)
    assert_json_error(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


# Resume cursors.


@pytest.mark.parametrize(
    "value",
    [
        b"abc",
        b"-1",
        b"+1",
        b"1e3",
        b"0x10",
        b"1.5",
        b"1 2",
        b"99999999999999999999999",
        b"9" * 200,
        "\u0661\u0662".encode(),  # Arabic-Indic digits
        "\uff11".encode(),  # a fullwidth 1
        b"\xff\xfe",
    ],
    ids=lambda value: value[:24].decode("latin-1").encode("ascii", "backslashreplace").decode(),
)
def test_garbage_last_event_id_header_is_400_json(client, baseline, value):
    response = client.get(f"/jobs/{baseline['id']}/events", headers={"Last-Event-ID": value})
    assert_json_error(response, 400, "bad_request")


@pytest.mark.parametrize("value", ["abc", "-1", "1e3", "9" * 30, "%FF", "%00", "%EF%BC%91", "1%00"])
def test_garbage_last_event_id_query_is_400_json(client, baseline, value):
    response = client.get(f"/jobs/{baseline['id']}/events?last_event_id={value}")
    assert_json_error(response, 400, "bad_request")


def test_header_cursor_wins_over_a_valid_query_cursor(client, baseline):
    response = client.get(f"/jobs/{baseline['id']}/events?last_event_id=1", headers={"Last-Event-ID": "x"})
    assert_json_error(response, 400, "bad_request")


def test_run_command_longer_than_the_limit_is_400_json(client):
    assert_json_error(client.get("/run?command=echo%20" + "a" * 4092), 400, "bad_request", "longer than 4096")


# Last, in file order: after everything above, the app still serves and lost nothing.


def test_zz_still_healthy_nothing_started_nothing_lost(client, baseline):
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["running_jobs"] == 0
    jobs = client.get("/jobs").json()["jobs"]
    assert [job["id"] for job in jobs] == [baseline["id"]], "a rejected request started a job"
    assert jobs[0] == baseline
    assert client.job_events(baseline["id"]) == ["start", "stdout", "exit"]
