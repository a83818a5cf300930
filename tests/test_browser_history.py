"""The console's job list over the history on disk (issue 17), in a real headless Chromium: it pages through
GET /jobs as it is scrolled, and its search box and state chips are sent to the server."""

from __future__ import annotations

import time

import httpx
import pytest

from .browser_support import (  # noqa: F401 - fixtures
    Console,
    browser_fixture,
    context_fixture,
    page_fixture,
)
from .server import GunicornServer, wait_until

JOBS = 65  # more than one page (50)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GunicornServer(tmp_path_factory.mktemp("history-page"), {"SSECMD_HEARTBEAT_INTERVAL": "2"}).start()
    with httpx.Client(base_url=srv.base_url, timeout=10) as client:
        ids = [client.post("/jobs", json={"argv": ["echo", f"job-{n}"]}).json()["id"] for n in range(JOBS)]
        assert wait_until(lambda: client.get("/jobs", params={"state": "running"}).json()["jobs"] == [], 20)
    time.sleep(1.0)  # finished and written out: what follows is read from the disk
    srv.ids = ids
    yield srv
    srv.stop()


def _shown(page) -> list[str]:
    return page.eval_on_selector_all("#jobs button.job", "els => els.map(e => e.dataset.id)")


def test_the_list_pages_through_the_history_as_it_is_scrolled(page, server):
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url) if "/jobs?" in request.url else None)
    console = Console(page, server).open()
    console.wait_live()
    page.wait_for_function("n => document.querySelectorAll('#jobs button.job').length >= n", arg=1)
    first = [url for url in requests if "before=" not in url]
    assert first and "limit=50" in first[0]
    page.set_viewport_size({"width": 1280, "height": 600})
    for _ in range(20):
        page.eval_on_selector("#jobs", "el => { el.scrollTop = el.scrollHeight; }")  # as a wheel would
        if len(_shown(page)) == JOBS:
            break
        page.wait_for_timeout(200)
    assert _shown(page) == server.ids[::-1]  # every job, newest first, once
    assert any("before=" in url for url in requests)


def test_the_search_box_and_the_chips_ask_the_server(page, server):
    console = Console(page, server).open()
    console.wait_live()
    with page.expect_response(lambda r: "/jobs?" in r.url and "q=job-7" in r.url) as info:
        page.fill("#jobs-filter", "job-7")
    assert info.value.status == 200
    assert [job["command"] for job in info.value.json()["jobs"]] == ["echo job-7"]
    page.wait_for_function("() => document.querySelectorAll('#jobs button.job').length === 1")
    assert _shown(page) == [server.ids[7]]
    page.fill("#jobs-filter", "")
    with page.expect_response(lambda r: "/jobs?" in r.url and "state=cancelled" in r.url) as info:
        page.click(".state-chip[data-filter=cancelled]")
    assert info.value.json()["jobs"] == [] and info.value.json()["counts"] == {"exited": JOBS}
    page.wait_for_selector("#jobs-empty:not([hidden])")


def test_an_old_job_opens_and_replays_after_a_restart(page, tmp_path):
    settings = {"SSECMD_DATA_DIR": str(tmp_path / "data")}
    first = GunicornServer(tmp_path, settings).start()
    try:
        job_id = httpx.post(first.url("/jobs"), json={"argv": ["seq", "1", "300"]}, timeout=10).json()["id"]
        assert wait_until(lambda: httpx.get(first.url(f"/jobs/{job_id}")).json()["state"] == "exited", 10)
    finally:
        first.stop()
    again = GunicornServer(tmp_path, settings).start()
    try:
        console = Console(page, again).open(f"/#job={job_id}")
        console.wait_for_badge("exit 0")
        console.wait_for_line("300")
        assert console.output_lines() == [str(n) for n in range(1, 301)]
        assert console.job_item(job_id).get_attribute("data-gone") == "false"
    finally:
        again.stop()
