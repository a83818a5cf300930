"""The console under a flood: `yes` streaming into the real page in a headless Chromium (Debian's, via Playwright).

Two figures, from inside the page while `yes` writes as fast as the server sends:
- how late a 16 ms timer fires (a stand-in for everything else the page must do: clicks, typing, scrolling);
  the share of ticks more than 50 ms late, and their p50/p99/max lateness;
- how long Stop takes to act: from the click (the click event's own time stamp, so Playwright's actionability
  checks do not count) to the badge saying how the job ended (the server's answer to the DELETE, shown).
  When the last line of output was shown (the exit event, after what was still in flight) is reported beside it.
tests/test_browser_flood.py checks the same with generous bounds; `make bench` records them in RESULTS.md.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

from .server import Server
from .tools import BenchError, percentile

CHROMIUM = os.environ.get("SSECMD_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TICK_MS = 16
LATE_MS = 50

# Installed in the page before the flood starts: the timer probe and what Stop does.
PROBE = """(tick) => {
    const probe = { late: [], counting: false, stopClick: null, stopped: null, ended: null };
    window.__flood = probe;
    let expected = performance.now() + tick;
    const step = () => {
        const now = performance.now();
        if (probe.counting) probe.late.push(now - expected);
        expected = now + tick;
        probe.timer = setTimeout(step, tick);
    };
    probe.timer = setTimeout(step, tick);
    document.querySelector('#stop').addEventListener('click', (event) => {
        probe.counting = false;
        probe.stopClick = event.timeStamp;
    }, { capture: true });
    const badge = document.querySelector('#job-state');
    new MutationObserver(() => {
        const text = badge.textContent;
        if (probe.stopClick !== null && probe.stopped === null && text !== 'running' && text !== 'stopping') {
            probe.stopped = performance.now();
        }
    }).observe(badge, { childList: true, characterData: true, subtree: true });
    new MutationObserver(() => {
        if (probe.ended === null && document.querySelector('#term-lines .ln.end')) probe.ended = performance.now();
    }).observe(document.querySelector('#term-lines'), { childList: true });
}"""


def flood_once(page, seconds: float) -> dict:
    """One round on a console page that is live: start `yes`, measure for ``seconds``, press Stop."""
    page.evaluate(PROBE, TICK_MS)
    page.fill("#command", "yes")
    with page.expect_response(lambda r: r.url.endswith("/jobs") and r.request.method == "POST") as posted:
        page.press("#command", "Enter")
    job = posted.value.json()
    page.wait_for_function("() => [...document.querySelectorAll('#term-lines .ln')].some(e => e.textContent === 'y')",
                           timeout=30_000)
    page.evaluate("() => { window.__flood.counting = true; }")
    time.sleep(seconds)
    page.click("#stop", timeout=30_000)
    page.wait_for_function("() => window.__flood.stopped !== null", timeout=30_000)
    page.wait_for_function("() => window.__flood.ended !== null", timeout=60_000)
    found = page.evaluate("() => { clearTimeout(window.__flood.timer); return window.__flood; }")
    late = found["late"]
    if len(late) < 10:
        raise BenchError(f"the timer fired only {len(late)} times in {seconds} s of flood")
    return {
        "late": late,
        "stop_ms": found["stopped"] - found["stopClick"],
        "ended_ms": found["ended"] - found["stopClick"],
        "job": job["id"],
    }


def summarise(rounds: list[dict], seconds: float) -> dict:
    """The figures over every round: lateness pooled, Stop per round."""
    late = [value for one in rounds for value in one["late"]]
    stops = [one["stop_ms"] for one in rounds]
    ended = [one["ended_ms"] for one in rounds]
    return {
        "rounds": len(rounds),
        "seconds_each": seconds,
        "ticks": len(late),
        "late_fraction": sum(1 for value in late if value > LATE_MS) / len(late),
        "late_p50_ms": percentile(late, 0.5),
        "late_p99_ms": percentile(late, 0.99),
        "late_max_ms": max(late),
        "stop_ms": stops,
        "stop_median_ms": statistics.median(stops),
        "stop_max_ms": max(stops),
        "ended_median_ms": statistics.median(ended),
        "ended_max_ms": max(ended),
    }


def console_flood(rounds: int, seconds: float) -> dict:
    """Start the server (as shipped, `yes` allowed) and Chromium; ``rounds`` floods of ``seconds`` each."""
    from playwright.sync_api import sync_playwright  # installed with the test extras (make install)

    if not Path(CHROMIUM).exists():
        raise BenchError(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with Server(1, "console-flood", extra={"SSECMD_ALLOWED_COMMANDS": "yes echo"}) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 820})
            page.set_default_timeout(30_000)
            page.goto(f"http://{server.host}:{server.port}/")
            page.wait_for_selector("#conn[data-state=live]")
            found = [flood_once(page, seconds) for _ in range(rounds)]
        finally:
            browser.close()
    return summarise(found, seconds)
