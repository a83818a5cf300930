"""Output in the order it was written (issue 18, item 1), on a real server, in its events, its raw output and
the console in a real headless Chromium.

Default mode: the first pump round starts once the first write (out1) is readable, and reads stdout before
stderr, so out1 is always shown before err1 (the old pump showed err1, err2, out1, out2). Merged mode
(``"stderr": "merged"``): one pipe for both, the exact order, every event ``stdout``.
"""

from __future__ import annotations

import json

import httpx
import pytest

from .browser_support import (  # noqa: F401 - fixtures
    Console,
    browser_fixture,
    context_fixture,
    page_fixture,
)
from .server import TEST_ALLOWED, GunicornServer
from .sse_client import collect, payload

SCRIPT = "echo out1; echo err1 >&2; echo out2; echo err2 >&2"
EXACT = ["out1", "err1", "out2", "err2"]
ACTIONS = {"ordered": {"argv": ["sh", "-c", SCRIPT], "stderr": "merged"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GunicornServer(
        tmp_path_factory.mktemp("order"),
        {"SSECMD_ALLOWED_COMMANDS": TEST_ALLOWED + " sh", "SSECMD_ACTIONS": json.dumps(ACTIONS)},
    ).start()
    yield srv
    srv.stop()


def _run(server: GunicornServer, body: dict) -> tuple[dict, list[tuple[str, str]], bytes]:
    """Start a job; its metadata, its output events as (kind, line) and its raw download."""
    response = httpx.post(server.url("/jobs"), json=body, timeout=10)
    assert response.status_code == 201, response.text
    job = response.json()
    events = collect(server.url(f"/jobs/{job['id']}/events"))
    lines = [
        (event.type, line)
        for event in events
        if event.type in ("stdout", "stderr")
        for line in payload(event)["out"].splitlines()
    ]
    raw = httpx.get(server.url(f"/jobs/{job['id']}/output?download=1"), timeout=10).content
    return job, lines, raw


def _stdout_first(lines: list[str]) -> bool:
    """out1, SCRIPT's first write, comes before err1: the round it starts reads stdout first.

    (out2 and err2 are shown in order too unless both land between that round's two reads: not asserted.)
    """
    return lines.index("out1") < lines.index("err1")


@pytest.mark.parametrize("body", [
    {"command": f"sh -c '{SCRIPT}'", "stderr": "merged"},
    {"action": "ordered"},  # the action sets it
], ids=["request", "action"])
def test_merged_mode_is_exact_in_events_and_raw_output(server, body):
    for _ in range(3):
        job, lines, raw = _run(server, body)
        assert job["stderr"] == "merged"
        assert lines == [("stdout", line) for line in EXACT]
        assert raw == b"out1\nerr1\nout2\nerr2\n"


def test_default_mode_reads_stdout_first_within_a_round(server):
    for _ in range(5):
        job, lines, raw = _run(server, {"command": f"sh -c '{SCRIPT}'"})
        assert job["stderr"] == "separate"
        assert sorted(lines) == [("stderr", "err1"), ("stderr", "err2"), ("stdout", "out1"), ("stdout", "out2")]
        assert _stdout_first([line for _, line in lines]), lines
        assert _stdout_first(raw.decode().splitlines()), raw


def test_run_takes_the_stderr_mode_as_a_query_parameter(server):
    url = httpx.URL(server.url("/run"), params={"command": f"sh -c '{SCRIPT}'", "stderr": "merged"})
    events = collect(str(url))
    assert not [event for event in events if event.type == "stderr"]
    assert "".join(payload(e)["out"] for e in events if e.type == "stdout") == "out1\nerr1\nout2\nerr2\n"


@pytest.mark.parametrize("query, body", [
    ("stderr=both", {"command": "echo hi", "stderr": "both"}),
    ("stderr=", {"command": "echo hi", "stderr": True}),
])
def test_a_bad_stderr_mode_is_a_400_with_a_reason(server, query, body):
    response = httpx.post(server.url("/jobs"), json=body, timeout=10)
    assert response.status_code == 400
    assert response.json()["message"] == 'stderr must be "separate" or "merged"'
    response = httpx.get(server.url(f"/run?command=echo+hi&{query}"), timeout=10)
    assert response.status_code == 400
    assert response.json()["message"] == 'stderr must be "separate" or "merged"'


def test_the_console_toggle_merges_stderr_and_shows_the_exact_order(page, server):
    console = Console(page, server).open()
    console.wait_live()
    toggle = page.locator("#merge-stderr")
    assert toggle.get_attribute("aria-pressed") == "false"
    console.run(f"sh -c '{SCRIPT}'")
    console.wait_for_badge("exit 0")
    assert _stdout_first(console.output_lines()), console.output_lines()

    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "true"
    with page.expect_request(lambda r: r.url.endswith("/jobs") and r.method == "POST") as info:
        job_id = console.run(f"sh -c '{SCRIPT}'")
    assert info.value.post_data_json == {"command": f"sh -c '{SCRIPT}'", "stderr": "merged"}
    console.wait_for_badge("exit 0")
    assert console.output_lines() == EXACT
    raw = httpx.get(server.url(f"/jobs/{job_id}/output?download=1"), timeout=10).content
    assert raw == b"out1\nerr1\nout2\nerr2\n"

    page.reload()  # remembered in this browser
    console.wait_live()
    assert page.get_attribute("#merge-stderr", "aria-pressed") == "true"
