"""GET /jobs: cursor pages, filters, counts by state, and 400s naming the parameter, for either store (issue 17)."""

from __future__ import annotations

import time

import gevent
import pytest

from .app_client import app_client

ARGVS = [["echo", "deploy", "web"], ["echo", "Deploy", "db"], ["ls", "/srv"], ["date"], ["echo", "backup"],
         ["uname", "-a"], ["echo", "deploy", "cache"]]


@pytest.fixture(scope="module", params=["true", "false"], ids=["history", "memory"])
def setup(request, tmp_path_factory):
    client = app_client(tmp_path_factory.mktemp("query"), {"SSECMD_HISTORY": request.param})
    store = client.service.store
    ids = []
    for n, argv in enumerate(ARGVS):
        ids.append(client.finished_job(argv, owner="bob" if n % 2 else "alice").id)
        time.sleep(0.002)  # distinct creation times
    running = store.create_job(["sleep", "60"], 60, "jobs", owner="alice")
    ids.append(running.id)
    if request.param == "true":
        gevent.sleep(1.0)  # written out, and the finished jobs gone from memory: pages come from SQL
        assert all(job_id not in store._logs for job_id in ids[:-1])
    yield client, ids[::-1]  # newest first
    store.close(5)


def _get(client, **params):
    answer = client.get("/jobs", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_pages_follow_the_cursor_to_the_end_newest_first(setup):
    client, ids = setup
    seen, cursor, pages = [], None, 0
    while True:
        body = _get(client, limit="3", **({"before": cursor} if cursor else {}))
        seen += [job["id"] for job in body["jobs"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == ids and pages == 3
    assert [job["id"] for job in _get(client)["jobs"]] == ids  # no limit: every kept job, as before


def test_filters_and_counts_for_the_filter(setup):
    client, ids = setup
    everything = _get(client)
    assert everything["counts"] == {"exited": 7, "running": 1}
    deploys = _get(client, q="DEPLOY")
    assert [job["command"] for job in deploys["jobs"]] == ["echo deploy cache", "echo Deploy db", "echo deploy web"]
    assert deploys["counts"] == {"exited": 3}
    running = _get(client, state="running")
    assert [job["id"] for job in running["jobs"]] == ids[:1] and running["counts"] == everything["counts"]
    bobs = _get(client, user="bob", state="exited")
    assert {job["owner"] for job in bobs["jobs"]} == {"bob"} and len(bobs["jobs"]) == 3
    created = [job["created_at"] for job in everything["jobs"]]
    window = _get(client, since=created[5], until=created[2])
    assert [job["id"] for job in window["jobs"]] == ids[3:6]
    assert _get(client, since="9999999999")["jobs"] == []


@pytest.mark.parametrize(
    ("parameter", "value"),
    [("limit", "0"), ("limit", "501"), ("limit", "ten"), ("before", "not-a-cursor"), ("state", "sleeping"),
     ("since", "yesterday"), ("until", "2026-13-01"), ("q", ""), ("user", "x" * 300)],
)
def test_bad_values_get_a_400_naming_the_parameter(setup, parameter, value):
    client, _ = setup
    answer = client.get("/jobs", params={parameter: value})
    assert answer.status_code == 400
    assert answer.json()["parameter"] == parameter and parameter in answer.json()["message"]
