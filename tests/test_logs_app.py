"""X-Request-ID and log_format decisions, answered by the app in-process (tests/app_client.py)."""

from __future__ import annotations

import json
import logging
import re

import pytest

from app.config import ConfigError, load_settings
from app.logs import REQUEST_ID, USER, JsonFormatter

from .app_client import AppClient, app_client

PROXY = "10.0.0.5"


@pytest.fixture(scope="module")
def srv(tmp_path_factory) -> AppClient:
    return app_client(tmp_path_factory.mktemp("logs-app"), {"SSECMD_TRUSTED_PROXIES": PROXY})


@pytest.mark.parametrize(
    ("peer", "offered", "kept"),
    [
        (PROXY, "abc-123", True),
        (PROXY, "a" * 128, True),
        ("192.0.2.7", "abc-123", False),  # anyone else's is replaced
        (PROXY, "a" * 129, False),  # too long
        (PROXY, "has space", False),
        (PROXY, 'quo"te', False),
        (PROXY, "", False),
    ],
)
def test_x_request_id_is_kept_only_from_a_trusted_proxy_and_well_formed(srv, peer, offered, kept):
    response = srv.get("/healthz", headers={"X-Request-ID": offered}, remote_addr=peer)
    rid = response.headers["X-Request-ID"]
    if kept:
        assert rid == offered
    else:
        assert rid != offered and re.fullmatch(r"[0-9a-f]{32}", rid)


@pytest.mark.parametrize("path", ["/jobs", "/nowhere", "/metrics"])
def test_refusals_and_errors_carry_a_request_id(srv, path):
    response = srv.get(path, remote_addr="192.0.2.7")
    assert response.status_code in (401, 403, 404)
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_every_request_gets_its_own_id(srv):
    ids = {srv.get("/healthz").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5


def test_log_format_is_text_by_default_and_checked(tmp_path):
    assert load_settings({}).log_format == "text"
    assert load_settings({"SSECMD_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="log_format"):
        load_settings({"SSECMD_LOG_FORMAT": "xml"})


def test_the_json_formatter_writes_one_object_with_the_request():
    REQUEST_ID.set("r-1")
    USER.set("alice")
    try:
        record = logging.LogRecord("app.x", logging.WARNING, __file__, 1, "two\nlines %s", ("é",), None)
        line = JsonFormatter().format(record)
    finally:
        REQUEST_ID.set(None)
        USER.set(None)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry == {"timestamp": entry["timestamp"], "level": "warning", "logger": "app.x", "message": "two\nlines é",
                     "request_id": "r-1", "user": "alice"}
