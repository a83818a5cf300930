"""The OpenAPI contract (app/http/openapi.py, GET /openapi.json) in-process: valid, public, in step with the routes.

The document is written by hand next to the views; these tests are what keeps it true to them: every Flask
route is documented, every documented operation is a route, and every error answer the app gives for a
bad request has the documented shape. tests/test_openapi_fuzz.py checks the real server against it.
"""

from __future__ import annotations

import json
import re

import pytest
from openapi_spec_validator import validate

from app.http.openapi import document
from app.policy.access import hash_token, new_token

from .app_client import AppClient, app_client

TOKEN = new_token()
# Methods every Flask route has by itself (werkzeug answers them); the contract lists the ones the views define.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> AppClient:
    """An app with authentication configured, so that "public" means something."""
    tokens = [{"user": "alice", "roles": ["admin"], "hash": hash_token(TOKEN)}]
    return app_client(tmp_path_factory.mktemp("openapi-app"), {"SSECMD_TOKENS": json.dumps(tokens)})


def openapi_path(rule: str) -> str:
    """A werkzeug rule as an OpenAPI path: ``/jobs/<job_id>`` and ``/static/<path:filename>`` -> ``{name}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_served_without_credentials_as_json(client):
    answer = client.get("/openapi.json")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == json.loads(json.dumps(document()))


def test_is_a_valid_openapi_3_1_document(client):
    served = client.get("/openapi.json").json()
    assert served["openapi"].startswith("3.1.")
    validate(served)  # openapi-spec-validator: the 3.1 schema, and every $ref resolves


def test_every_route_is_documented_and_every_documented_operation_is_a_route(client):
    routes = {
        (openapi_path(rule.rule), method.lower())
        for rule in client.app.url_map.iter_rules()
        for method in (rule.methods or set()) - IMPLICIT_METHODS
    }
    documented = {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace")
    }
    assert routes - documented == set(), "routes missing from app/http/openapi.py"
    assert documented - routes == set(), "documented operations that no route serves"


def test_path_parameters_match_the_routes():
    """Each path's {name} placeholders are declared as path parameters, and nothing else is."""
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            declared = {p["name"] for p in [*item.get("parameters", []), *operation.get("parameters", [])]
                        if p["in"] == "path"}
            assert declared == set(re.findall(r"{([^}]+)}", path)), (method, path)


def test_public_operations_are_the_ones_answered_without_credentials(client):
    """Operations documented with optional security answer without a token; the rest say 401, as documented."""
    spec = document()
    for path, item in spec["paths"].items():
        if "{" in path:
            continue
        for method, operation in item.items():
            security = operation.get("security", spec["security"])
            answer = client.request(method.upper(), path, json={} if method == "post" else None)
            if {} in security:
                assert answer.status_code != 401, (method, path, answer.text)
            else:
                assert answer.status_code == 401, (method, path, answer.text)
                assert "401" in operation["responses"]
                assert set(answer.json()) >= {"error", "message"}


def test_job_states_come_from_the_states_table():
    from app.states import JobState

    assert document()["components"]["schemas"]["Job"]["properties"]["state"]["enum"] == [s.value for s in JobState]


def concrete(path: str, job_id: str) -> str:
    """A documented path with its placeholders filled: a real job, a channel, a static file."""
    return path.format(job_id=job_id, name="ops", filename="app.css", run_id="0123456789abcdef")


@pytest.mark.parametrize(
    ("case", "headers"),
    [
        ("foreign host", {"Host": "evil.example"}),
        ("refused token", {"Authorization": "Bearer not-a-token"}),
        ("cross-site browser", {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}),
    ],
)
def test_refusals_are_documented_for_every_operation(client, case, headers):
    """Whatever the auth and browser rules answer an operation, its documentation lists (as a JSON error)."""
    job = client.finished_job(["echo", "hi"], owner="alice")
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if method == "parameters" or operation["operationId"] in ("subscribe", "multiplexed"):
                continue  # endless streams: their refusals come before the stream, as checked in test_channels*
            answer = client.request(method.upper(), concrete(path, job.id), headers=headers,
                                    json={} if method == "post" else None)
            where = (case, method, path, answer.status_code, answer.text[:200])
            assert str(answer.status_code) in operation["responses"], where
            if answer.status_code >= 400:
                assert answer.headers["Content-Type"] == "application/json", where
                assert {"error", "message"} <= set(answer.json()), where
