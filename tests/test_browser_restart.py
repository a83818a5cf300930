"""The console through a server restart (SIGHUP to the gunicorn master), in a real headless Chromium.

The old worker ends every stream; its jobs die with it, and the new worker knows neither them nor the old
jobs channel's ids. The page must say it is reconnecting, come back by itself, show every line exactly once,
and follow what happens on the new worker: a job started there, its output, and the job list. The jobs the new
server does not have stay on screen with what they printed, marked "no longer on the server", with Raw and
Download off, and the badge says what ended them.
"""

from __future__ import annotations

import collections
import signal

import httpx

from .browser_support import (  # noqa: F401 - fixtures
    Console,
    browser_fixture,
    context_fixture,
    emit_command,
    hexed,
    page_fixture,
    record_conn_states,
    shot,
    wait_for,
    wait_reconnected,
)


def _no_duplicates(lines: list[str]) -> None:
    repeated = [line for line, count in collections.Counter(lines).items() if count > 1]
    assert not repeated, f"lines shown more than once: {repeated[:5]}"


def test_reconnects_after_a_server_restart(page, make_server):
    # Memory only: the restart forgets the jobs and the channel's history (with history on disk, they stay).
    server = make_server({"SSECMD_HEARTBEAT_INTERVAL": "2", "SSECMD_HISTORY": "false"}, graceful_timeout=5)
    console = Console(page, server).open()
    console.wait_live()
    chat = page.context.new_page()
    chat.goto(server.url("/chat?channel=ops"))
    chat.wait_for_selector("#conn[data-state=live]")
    for text in ("one", "two"):
        httpx.post(server.url("/channels/ops/messages"), json={"data": text}, timeout=5)
    chat.wait_for_selector(".msg-text:text-is('two')")
    record_conn_states(chat)

    before = console.run("echo finished before the restart")
    console.wait_for_badge("exit 0")
    ticks = [f"out:{hexed(f'tick {n}' + chr(10))}:0.1" for n in range(1, 101)]
    old_job = console.run(emit_command(*ticks))
    console.wait_for_line("tick 5")
    old_worker = server.worker_pids()
    record_conn_states(page)

    server.proc.send_signal(signal.SIGHUP)
    page.wait_for_function("() => window.__states.includes('reconnecting')", timeout=15_000)
    shot(page, "restart-reconnecting")
    wait_reconnected(page)
    wait_for(lambda: server.worker_pids() and server.worker_pids() != old_worker, message="a new worker")

    # The old job's output: every tick once, in order, with nothing missing up to where it stopped.
    page.wait_for_selector("#term-lines .ln.gap, #term-lines .ln.end")
    shown = [line for line in console.output_lines() if line.startswith("tick ")]
    assert shown, "no ticks shown"
    assert shown == [f"tick {n}" for n in range(1, len(shown) + 1)]
    # What it printed stays, marked as no longer on the server; the badge says what ended it, in the final
    # line's colour; Raw and Download are off.
    page.wait_for_selector("#job-gone:not([hidden])")
    assert page.text_content("#job-gone") == "no longer on the server"
    assert page.text_content("#job-state") in ("server restart", "lost")
    badge_colour, end_colour = page.evaluate(
        "() => [document.querySelector('#job-state'), document.querySelector('#term-lines .ln.end')]"
        ".map((e) => getComputedStyle(e).color)"
    )
    assert badge_colour == end_colour
    for link in ("#raw-link", "#download-link"):
        assert page.get_attribute(link, "aria-disabled") == "true" and page.get_attribute(link, "href") is None
    assert console.job_item(old_job).count() == 1
    assert console.job_item(old_job).get_attribute("data-gone") == "true"
    # A job that had ended before the restart stays in the list too, marked the same way.
    assert console.job_item(before).get_attribute("data-gone") == "true"
    assert "exit 0" in console.job_item(before).text_content()
    shot(page, "restart-gone")

    # A job started after the reconnect is followed live on the new worker.
    new_job = console.run(emit_command("out:" + hexed("".join(f"new {n}\n" for n in range(1, 21))) + ":0.3"))
    console.wait_for_badge("exit 0")
    lines = console.output_lines()
    _no_duplicates(lines)
    assert lines == [f"new {n}" for n in range(1, 21)]
    console.wait_job_state(new_job, "exited")

    # The job list hears of jobs on the new worker's jobs channel (its ids started again from 1).
    other = httpx.post(server.url("/jobs"), json={"command": "sleep 0.5"}, timeout=5).json()["id"]
    console.wait_job_state(other, "running")
    console.wait_job_state(other, "exited")
    shot(page, "restart-after")

    # The chat page came back too; the new server's channel ids start again from 1, and still nothing is
    # lost or shown twice.
    wait_reconnected(chat)
    for text in ("three", "four"):
        httpx.post(server.url("/channels/ops/messages"), json={"data": text}, timeout=5)
    chat.wait_for_selector(".msg-text:text-is('four')")
    assert chat.locator(".msg-text").all_text_contents() == ["one", "two", "three", "four"]
    assert chat.locator(".msg.note").count() == 1  # "the server restarted" between two and three
    shot(chat, "restart-chat")

    # Opening the old job again shows what this page kept of it, not an empty screen.
    console.job_item(old_job).click()
    page.wait_for_selector("#job-gone:not([hidden])")
    page.wait_for_selector("#term-lines .ln.end")
    assert [line for line in console.output_lines() if line.startswith("tick ")] == shown
    assert page.is_visible("#job-gone")
    assert page.locator("#conn").get_attribute("data-state") == "live"
