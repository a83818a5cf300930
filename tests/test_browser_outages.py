"""Outages and endings, as the console shows them (issue 18, item 3), in a real headless Chromium.

While the page is not connected, a banner across the output says so, with the time since the last event and a
"retry now" button that does not wait for the backoff. A job that still exists when the page finds a restarted
server resumes where it was. The badge says who or what ended a job (a user's cancel, with the name when the server
gives one, a timeout, the output limit, a signal nobody here sent), and the final line has the badge's colour.
(A real restart, and jobs the server no longer has: tests/test_browser_restart.py.)
"""

from __future__ import annotations

import json
import time

import pytest

from .browser_support import (  # noqa: F401 - fixtures
    PYTHON,
    Console,
    browser_fixture,
    context_fixture,
    emit_command,
    hexed,
    page_fixture,
    record_conn_states,
    shot,
)
from .server import GunicornServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GunicornServer(
        tmp_path_factory.mktemp("outages"),
        {"SSECMD_HEARTBEAT_INTERVAL": "5", "SSECMD_MAX_OUTPUT_BYTES": "200000"},
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def console(page, server):
    c = Console(page, server).open()
    c.wait_live()
    return c


def _ticks(count: int, every: float = 0.1) -> str:
    return emit_command(*[f"out:{hexed(f'tick {n}' + chr(10))}:{every}" for n in range(1, count + 1)])


def test_connection_lost_banner_and_retry_now(console):
    page = console.page
    console.run(_ticks(120, 0.2))
    console.wait_for_line("tick 3")
    assert page.is_hidden("#conn-banner")
    # The network goes away: every request fails, and the open stream breaks.
    page.route("**/*", lambda route: route.abort())
    page.evaluate("window.sseCommander.stream.source.dispatchEvent(new Event('error'))")
    page.wait_for_selector("#conn-banner:not([hidden])")
    # Across the output pane, not a corner: as wide as the output itself.
    banner, output = page.locator("#conn-banner").bounding_box(), page.locator("#term").bounding_box()
    assert banner["width"] >= output["width"] - 2 and abs(banner["y"] - output["y"]) < 2
    # Failed attempts make the backoff grow; wait until the next one is seconds away.
    page.wait_for_function("() => window.sseCommander.stream.retryAt - Date.now() > 3000", timeout=30_000)
    page.wait_for_function("() => /Retrying in \\d+ s/.test(document.querySelector('#conn-banner').textContent)")
    text = page.text_content("#conn-banner")
    assert "Connection lost." in text and "Last event" in text and " ago." in text, text
    shot(page, "outage-banner")
    # The backoff has grown to seconds; "retry now" does not wait for it.
    waiting = page.evaluate("window.sseCommander.stream.retryAt - Date.now()")
    assert waiting > 2500, waiting
    page.unroute("**/*")
    record_conn_states(page)
    started = time.monotonic()
    page.click("#conn-retry")
    page.wait_for_selector("#conn[data-state=live]", timeout=waiting - 500)
    assert time.monotonic() - started < waiting / 1000
    page.wait_for_selector("#conn-banner", state="hidden")
    # Nothing lost, nothing twice.
    console.wait_for_line("tick 40")
    ticks = [line for line in console.output_lines() if line.startswith("tick ")]
    assert ticks == [f"tick {n}" for n in range(1, len(ticks) + 1)]


def test_a_job_that_still_exists_resumes_after_a_restart(console):
    page = console.page
    job_id = console.run(_ticks(60, 0.05))
    console.wait_for_line("tick 5")
    # The page finds "another" server process (as after a restart, with a store that kept the job).
    seen = []

    def new_worker(route):
        response = route.fetch()
        health = response.json()
        health["worker_pid"] = health["worker_pid"] + 100000
        seen.append(health["worker_pid"])
        route.fulfill(response=response, body=json.dumps(health))

    page.route("**/healthz", new_worker)
    page.evaluate("window.sseCommander.stream.source.dispatchEvent(new Event('error'))")
    console.wait_for_badge("exit 0", timeout=20_000)
    console.wait_for_line("tick 60")  # the end may be known (from the job's metadata) before the output
    assert seen, "the page did not look at the server again"
    assert console.output_lines() == [f"tick {n}" for n in range(1, 61)]
    assert page.is_hidden("#job-gone")
    assert page.get_attribute("#download-link", "href").endswith(f"/jobs/{job_id}/output?download=1")


BADGE_AND_END_COLOUR = """() => [
    getComputedStyle(document.querySelector('#job-state')).color,
    getComputedStyle(document.querySelector('#term-lines .ln.end')).color,
]"""


def _ended(console, badge: str) -> str:
    console.wait_for_badge(badge, timeout=15_000)
    page = console.page
    page.wait_for_selector("#term-lines .ln.end")
    badge_colour, end_colour = page.evaluate(BADGE_AND_END_COLOUR)
    assert badge_colour == end_colour, (badge, badge_colour, end_colour)
    end = page.text_content("#term-lines .ln.end")
    assert end.startswith(f"[{badge}"), end
    return end


def test_the_badge_says_who_ended_a_job(console):
    page = console.page
    # A user's cancel (no login here: no name).
    console.run("sleep 30")
    page.wait_for_function("() => !document.querySelector('#stop').disabled")
    page.click("#stop")
    assert "SIGTERM" in _ended(console, "cancelled")

    # With the name, when the server says who (the job's cancelled_by).
    def named(route):
        response = route.fetch()
        job = response.json()
        job["cancelled_by"] = "alice"
        route.fulfill(response=response, body=json.dumps(job))

    page.route("**/jobs/*", lambda route: named(route) if route.request.method == "DELETE" else route.continue_())
    console.run("sleep 30")
    page.wait_for_function("() => !document.querySelector('#stop').disabled")
    page.click("#stop")
    _ended(console, "cancelled by alice")
    page.unroute("**/jobs/*")

    # Its own timeout.
    page.evaluate("fetch('/jobs', {method: 'POST', headers: {'Content-Type': 'application/json'},"
                  " body: JSON.stringify({command: 'sleep 30', timeout: 0.5})}).then(r => r.json())"
                  ".then(job => location.hash = 'job=' + job.id)")
    page.reload()
    _ended(console, "timed out")

    # The output limit.
    console.run("yes")
    _ended(console, "output limit")

    # A signal nobody here sent.
    console.run(f"{PYTHON} -c 'import os; os.kill(os.getpid(), 9)'")
    _ended(console, "killed by SIGKILL")
    shot(page, "ended-killed")
    # And a plain failure is red, a success green: the same colour in the badge and the final line.
    console.run("ls /nonexistent")
    _ended(console, "exit 2")
