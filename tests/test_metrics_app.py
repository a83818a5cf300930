"""Who may read GET /metrics, and what the HTTP layer counts, answered by the app in-process (tests/app_client.py)."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import ConfigError, load_settings

from .app_client import AppClient, app_client
from .auth_support import Credentials, bearer

CREDS = Credentials()
SCRAPER = CREDS.add_token("prometheus", ["metrics"])
ALICE = CREDS.add_token("alice", ["operator"])
OUTSIDE = "192.0.2.7"  # not in the default metrics_allow (loopback)


@pytest.fixture(scope="module")
def srv(tmp_path_factory) -> AppClient:
    return app_client(tmp_path_factory.mktemp("metrics-app"), CREDS.env())


def value(client: AppClient, name: str, **labels: str) -> float:
    """One sample of a scrape (0 if absent)."""
    text = client.get("/metrics", headers=bearer(SCRAPER)).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


@pytest.mark.parametrize(
    ("token", "peer", "status"),
    [
        (None, "127.0.0.1", 200),  # metrics_allow: loopback by default
        (None, "::1", 200),
        (None, OUTSIDE, 403),
        (SCRAPER, OUTSIDE, 200),  # the metrics role, from anywhere
        (ALICE, OUTSIDE, 403),  # an operator is not a scraper
    ],
)
def test_who_may_scrape(srv, token, peer, status):
    response = srv.get("/metrics", headers=bearer(token) if token else {}, remote_addr=peer)
    assert response.status_code == status, response.text
    if status == 200:
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "# TYPE ssecmd_jobs_started_total counter" in response.text
    else:
        assert response.json()["error"] == "forbidden"
        assert "metrics role" in response.json()["message"]


def test_a_forwarded_address_does_not_make_a_peer_allowed(tmp_path):
    # Behind a proxy every peer is the proxy: X-Forwarded-For never counts for metrics_allow.
    client = app_client(tmp_path, {**CREDS.env(), "SSECMD_TRUSTED_PROXIES": "127.0.0.1"})
    response = client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"}, remote_addr=OUTSIDE)
    assert response.status_code == 403


def test_a_role_of_ones_own_may_read_metrics(tmp_path):
    creds = Credentials()
    token = creds.add_token("grafana", ["dashboards"])
    roles = {"SSECMD_ROLES": json.dumps({"dashboards": {"read_metrics": True, "subscribe": ["stats"]}})}
    client = app_client(tmp_path, {**creds.env(), **roles})
    assert client.get("/metrics", headers=bearer(token), remote_addr=OUTSIDE).status_code == 200
    with pytest.raises(ConfigError, match="read_metrics"):
        load_settings({**roles, "SSECMD_ROLES": json.dumps({"x": {"read_metrics": "yes"}})})


def test_metrics_allow_is_a_setting(tmp_path):
    client = app_client(tmp_path, {**CREDS.env(), "SSECMD_METRICS_ALLOW": "192.0.2.0/24"})
    assert client.get("/metrics", remote_addr=OUTSIDE).status_code == 200
    assert client.get("/metrics", remote_addr="127.0.0.1").status_code == 403
    with pytest.raises(ConfigError, match="metrics_allow"):
        load_settings({"SSECMD_METRICS_ALLOW": "not-an-address"})


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/jobs", {"argv": ["echo", "hi"]}),
        ("GET", "/channels/news/events", None),
        ("POST", "/channels/news/messages", {"data": "hi"}),
    ],
)
def test_the_metrics_role_can_do_nothing_else(srv, method, path, body):
    response = srv.request(method, path, json=body, headers=bearer(SCRAPER), remote_addr=OUTSIDE)
    assert response.status_code == 403, response.text
    nothing = {"actions": [], "commands": [], "stdin_allowed": False}
    assert srv.get("/actions", headers=bearer(SCRAPER)).json() == nothing


def test_auth_failures_and_refusals_are_counted_by_reason(srv):
    unauthorized = value(srv, "ssecmd_auth_failures_total", status="401", reason="unauthorized")
    forbidden = value(srv, "ssecmd_auth_failures_total", status="403", reason="forbidden")
    assert srv.get("/jobs").status_code == 401
    assert srv.get("/jobs", headers=bearer("wrong")).status_code == 401
    assert srv.get("/metrics", remote_addr=OUTSIDE).status_code == 403
    assert value(srv, "ssecmd_auth_failures_total", status="401", reason="unauthorized") == unauthorized + 2
    assert value(srv, "ssecmd_auth_failures_total", status="403", reason="forbidden") == forbidden + 1


def test_rate_limited_job_starts_are_counted(tmp_path):
    client = app_client(tmp_path, {**CREDS.env(), "SSECMD_RATE_LIMIT_PER_MINUTE": "1", "SSECMD_RATE_LIMIT_BURST": "1",
                                   "SSECMD_ALLOWED_COMMANDS": "true"})
    before = value(client, "ssecmd_requests_refused_total", status="429", reason="rate_limited")
    answers = [client.post("/jobs", json={"argv": ["true"]}, headers=bearer(ALICE)).status_code for _ in range(2)]
    assert answers == [201, 429]
    assert value(client, "ssecmd_requests_refused_total", status="429", reason="rate_limited") == before + 1


def test_published_messages_are_counted(srv):
    before = value(srv, "ssecmd_messages_published_total")
    response = srv.post("/channels/news/messages", json={"data": "hello"}, headers=bearer(ALICE))
    assert response.status_code in (200, 201, 202), response.text
    assert value(srv, "ssecmd_messages_published_total") == before + 1
