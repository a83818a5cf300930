"""Refused requests cannot amplify into the log: paths are capped, and repeats from one address become a count."""

from __future__ import annotations

from pathlib import Path

import httpx

from app.policy.audit import MAX_LOGGED_TEXT, RepeatCollapser, capped

from .auth_support import Credentials, audit_records, wait_for_audit
from .server import wait_until


def _settings(audit: Path, **extra: str) -> dict[str, str]:
    creds = Credentials()
    creds.add_token("alice", ["operator"])
    return {**creds.env(), "SSECMD_AUDIT_LOG": str(audit), **extra}


def test_a_refused_requests_logged_path_is_capped(make_server, tmp_path):
    audit = tmp_path / "audit.log"
    srv = make_server(_settings(audit))
    long_path = "/jobs/" + "x" * 7000
    assert httpx.get(srv.url(long_path)).status_code == 401
    (record,) = wait_for_audit(audit, lambda r: r["audit"] == "refused")
    assert record["path"].startswith("/jobs/xxx") and len(record["path"]) < MAX_LOGGED_TEXT + 40
    assert "more characters" in record["path"]
    assert max(len(line) for line in audit.read_text().splitlines()) < 1024


def test_refusals_from_one_address_are_collapsed_into_a_count(make_server, tmp_path):
    audit = tmp_path / "audit.log"
    srv = make_server(_settings(audit, SSECMD_REFUSED_LOG_INTERVAL="1"))
    with httpx.Client(base_url=srv.base_url) as client:
        for n in range(200):
            assert client.get(f"/jobs?probe={n}").status_code == 401
        assert client.get("/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401

    def lines(kind: str) -> list[dict]:
        return [r for r in audit_records(audit) if r["audit"] == kind]

    # 201 refusals, a handful of lines: one in full per second, the rest as a count once the second is over.
    assert wait_until(lambda: len(lines("refused")) + sum(r["count"] for r in lines("refused_repeated")) == 201, 5)
    assert len(lines("refused")) <= 10
    assert all(r["addr"] == "127.0.0.1" and r["status"] == 401 and r["seconds"] == 1
               for r in lines("refused_repeated"))
    # After the interval, the next refusal is written in full again.
    assert httpx.get(srv.url("/jobs/after-the-flood")).status_code == 401
    assert wait_for_audit(audit, lambda r: r["audit"] == "refused" and r["path"] == "/jobs/after-the-flood")


def test_capped_text():
    assert capped("short") == "short" and capped(None) is None
    cut = capped("a" * 300, 100)
    assert cut.startswith("a" * 100) and cut.endswith("(200 more characters)")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_collapser_writes_one_record_per_key_and_interval_and_counts_the_rest():
    clock = _Clock()
    collapser = RepeatCollapser(10, clock=clock)
    assert collapser.admit("a") and collapser.admit("b")
    assert not any(collapser.admit("a") for _ in range(5))
    assert collapser.due() == []  # the interval is not over
    clock.now = 10
    assert collapser.due() == [("a", 5)] and collapser.due() == []
    assert collapser.admit("a")  # a new interval: in full again


def test_collapser_reports_a_count_when_the_next_interval_starts_with_a_record():
    clock = _Clock()
    collapser = RepeatCollapser(10, clock=clock)
    collapser.admit("a")
    collapser.admit("a")
    clock.now = 11
    assert collapser.admit("a")
    assert collapser.due() == [("a", 1)]


def test_collapser_keeps_a_bounded_number_of_keys():
    clock = _Clock()
    collapser = RepeatCollapser(10, max_keys=3, clock=clock)
    assert all(collapser.admit(n) for n in range(3))
    assert collapser.admit(3)  # the first of all the others, in full
    assert not any(collapser.admit(n) for n in range(4, 100))
    clock.now = 10
    assert collapser.due() == [(RepeatCollapser.OTHERS, 96)]


def test_collapser_with_no_interval_writes_everything():
    collapser = RepeatCollapser(0)
    assert all(collapser.admit("a") for _ in range(10)) and collapser.due() == []
