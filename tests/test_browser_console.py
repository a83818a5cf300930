"""The console page in a real headless Chromium against the real gunicorn server.

What a person sees: output live before the command ends, stderr told apart, ANSI colours, progress bars
that redraw their line, Stop, the job list across tabs, replays, literal text for hostile output, a
responsive page under 50 MB of output, action forms with their errors; and the chat page.
"""

from __future__ import annotations

import itertools
import json
import time

import httpx
import pytest

from .browser_support import (  # noqa: F401 - fixtures
    PHONE,
    Console,
    browser_fixture,
    context_fixture,
    emit_command,
    hexed,
    page_fixture,
    record_conn_states,
    shot,
    wait_reconnected,
)
from .server import GunicornServer

ACTIONS = {
    "greet": {
        "description": "Say hello to someone",
        "argv": ["echo", "hello", "{name}"],
        "params": {"name": {"type": "string", "pattern": "[a-z]{1,10}", "description": "lower-case name"}},
    },
    "count": {
        "description": "Count up",
        "argv": ["seq", "{n}"],
        "params": {"n": {"type": "integer", "min": 1, "max": 5, "default": 3}},
    },
    "pick": {"argv": ["echo", "{env}"], "params": {"env": {"type": "choice", "choices": ["staging", "prod"]}}},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GunicornServer(
        tmp_path_factory.mktemp("browser"),
        {"SSECMD_ACTIONS": json.dumps(ACTIONS), "SSECMD_HEARTBEAT_INTERVAL": "5"},
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def console(page, server):
    c = Console(page, server).open()
    c.wait_live()
    return c


def test_output_is_live_stderr_ansi_and_progress_bars(console):
    page = console.page
    command = emit_command(
        # Pauses between stdout and stderr writes: two pipes have no order between them.
        "out:" + hexed("first line\n") + ":0.1",
        "err:" + hexed("warning: on stderr\n") + ":0.1",
        "out:" + hexed("plain \x1b[31mred\x1b[0m \x1b[1;32mbold green\x1b[0m \x1b[38;5;208morange\x1b[0m\n"),
        "out:" + hexed("10%\r20%\r30%\n"),
        "out:" + hexed("done?\r\n") + ":2",
        "out:" + hexed("last line\n"),
    )
    console.run(command)
    console.wait_for_line("done?")
    # Seen while the command still sleeps: live, not at the end.
    assert page.text_content("#job-state") == "running"
    assert "last line" not in console.lines()
    shot(page, "console-live")

    # stderr is told apart: its own class, its own colour, and a marked line.
    err = page.locator("#term-lines .ln.has-e span.e")
    assert err.text_content() == "warning: on stderr"
    assert err.evaluate("e => getComputedStyle(e).color") != page.locator("#term-lines .ln").nth(1).evaluate(
        "e => getComputedStyle(e).color"
    )
    # ANSI: a red span, bold green, a 256-colour orange; the escapes themselves never show.
    red = page.locator("#term-lines span.fg-1")
    assert red.text_content() == "red"
    r, g, b = red.evaluate("e => getComputedStyle(e).color.match(/\\d+/g).map(Number)")
    assert r > 180 and g < 130 and b < 130
    bold = page.locator("#term-lines span.fg-2.b")
    assert bold.text_content() == "bold green"
    assert bold.evaluate("e => getComputedStyle(e).fontWeight") == "700"
    assert page.locator("#term-lines span", has_text="orange").evaluate("e => e.style.color") == "rgb(255, 135, 0)"
    assert not any("\x1b" in line or "[31m" in line for line in console.lines())
    # The progress bar redrew its own line: one line, "30%".
    assert [line for line in console.output_lines() if "%" in line] == ["30%"]

    console.wait_for_badge("exit 0")
    assert console.output_lines() == [
        "first line",
        "warning: on stderr",
        "plain red bold green orange",
        "30%",
        "done?",
        "last line",
    ]
    assert page.locator("#term-lines .ln.end").text_content().startswith("[exit 0")
    assert "#job=" in page.url
    href = page.get_attribute("#download-link", "href")
    assert href.endswith("/output?download=1")
    shot(page, "console-finished")


def test_stop_button_and_escape(console):
    page = console.page
    job_id = console.run(emit_command("out:" + hexed("started\n") + ":30"))
    console.wait_for_line("started")
    assert page.is_enabled("#stop")
    page.click("#stop")
    console.wait_for_badge("cancelled")  # who ended it, not just the signal (no login here: no name)
    page.wait_for_selector("#term-lines .ln.end")
    assert page.text_content("#term-lines .ln.end").startswith("[cancelled · SIGTERM")
    assert page.is_disabled("#stop")
    console.wait_job_state(job_id, "cancelled")

    # Escape stops the open job (when not typing in a field).
    second = console.run("sleep 30")
    page.wait_for_function("() => !document.querySelector('#stop').disabled")
    page.focus("#term")
    page.keyboard.press("Escape")
    console.wait_for_badge("cancelled")
    console.wait_job_state(second, "cancelled")


def test_job_list_follows_other_tabs_and_replays(context, server):
    watcher = Console(context.new_page(), server).open()
    watcher.wait_live()
    runner = Console(context.new_page(), server).open()
    runner.wait_live()

    job_id = runner.run(emit_command("out:" + hexed("\x1b[33mreplay me\x1b[0m\n"), "out:" + hexed("second\n") + ":1"))
    # The other tab hears of the job on the jobs channel: running, then its end.
    watcher.wait_job_state(job_id, "running")
    assert "emit.py" in watcher.job_item(job_id).text_content()
    watcher.wait_job_state(job_id, "exited")
    assert "exit 0" in watcher.job_item(job_id).text_content()
    shot(watcher.page, "console-job-list")

    # Clicking the finished job replays its whole output, colours and all.
    watcher.job_item(job_id).click()
    watcher.wait_for_badge("exit 0")
    watcher.wait_for_line("second")
    assert watcher.output_lines() == ["replay me", "second"]
    assert watcher.page.locator("#term-lines span.fg-3").text_content() == "replay me"
    assert watcher.job_item(job_id).get_attribute("aria-current") == "true"

    # So does a fresh page on the job's link.
    fresh = Console(context.new_page(), server).open(f"/#job={job_id}")
    fresh.wait_for_badge("exit 0")
    fresh.wait_for_line("second")
    assert fresh.output_lines() == ["replay me", "second"]


def test_hostile_output_is_inert_text(console):
    page = console.page
    payload = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>not bold</b>'
    console.run(emit_command("out:" + hexed(payload + "\n"), "err:" + hexed(payload + "\n")))
    console.wait_for_badge("exit 0")
    assert console.output_lines() == [payload, payload]
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#term-lines script, #term-lines img, #term-lines b").count() == 0
    # The command line itself (in the job list and the header) is text too.
    console.run("echo '<img src=x onerror=window.__pwned=3>'")
    console.wait_for_line("<img src=x onerror=window.__pwned=3>")
    assert page.locator("#jobs img, .job-head img").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_run_errors_and_action_forms(console):
    page = console.page
    # A command that is not allowed: the server's reason next to the command box.
    page.fill("#command", "rm -rf /tmp/nothing")
    page.press("#command", "Enter")
    page.wait_for_selector("#run-error:not([hidden])")
    assert "rm" in page.text_content("#run-error")

    # An action with a bad parameter: the message goes next to the field it names.
    page.click("details[class=action] >> text=greet")
    page.fill("#action-greet-name", "NOT-lower")
    page.click("form[data-action=greet] button[type=submit]")
    page.wait_for_selector("#action-greet-name-error:not([hidden])")
    assert "must match" in page.text_content("#action-greet-name-error")
    assert page.get_attribute("#action-greet-name", "aria-invalid") == "true"
    shot(page, "console-action-error")

    page.fill("#action-greet-name", "bob")
    page.click("form[data-action=greet] button[type=submit]")
    console.wait_for_line("hello bob")
    console.wait_for_badge("exit 0")

    # Integer range and choice select.
    page.click("details[class=action] >> text=count")
    assert page.input_value("#action-count-n") == "3"
    page.fill("#action-count-n", "9")
    page.click("form[data-action=count] button[type=submit]")
    page.wait_for_selector("#action-count-n-error:not([hidden])")
    assert "at most 5" in page.text_content("#action-count-n-error")
    page.fill("#action-count-n", "2")
    page.press("#action-count-n", "Enter")
    console.wait_for_line("2")
    console.wait_for_badge("exit 0")
    assert console.output_lines() == ["1", "2"]

    page.click("details[class=action] >> text=pick")
    page.select_option("#action-pick-env", "prod")
    page.click("form[data-action=pick] button[type=submit]")
    console.wait_for_line("prod")


def test_keyboard_focus_order(console):
    page = console.page
    # The command box has focus on load; "/" brings it back from anywhere else.
    assert page.evaluate("document.activeElement.id") == "command"
    page.focus("#term")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "command"
    page.keyboard.type("echo keyboard")
    page.keyboard.press("Enter")
    console.wait_for_line("keyboard")
    # Tab reaches the Run button next, with a visible focus ring.
    page.focus("#command")
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "[document.activeElement.textContent, getComputedStyle(document.activeElement).outlineStyle]"
    )
    assert focused == ["Run", "solid"]
    # The job list: arrows move between jobs, Enter opens one.
    console.run("echo second job")
    console.wait_for_badge("exit 0")
    page.focus("#jobs button.job >> nth=0")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.textContent").startswith("echo keyboard")
    page.keyboard.press("Enter")
    console.wait_for_line("keyboard")
    assert console.output_lines() == ["keyboard"]


def test_fifty_megabytes_stay_responsive(console):
    page = console.page
    last = 6_500_000  # seq 1 6500000: 51 MB of output
    page.evaluate(
        """() => {
        window.__ticks = [];
        window.__tick = setInterval(() => window.__ticks.push(performance.now()), 50);
    }"""
    )
    console.run(f"seq 1 {last}")
    slowest = 0.0
    deadline = time.monotonic() + 40
    while page.text_content("#job-state") == "running":
        assert time.monotonic() < deadline, "50 MB did not arrive in time"
        started = time.monotonic()
        page.evaluate("1 + 1")
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.1)
    console.wait_for_badge("exit 0")
    console.wait_for_line(str(last))
    print(f"50 MB shown in {time.monotonic() - deadline + 40:.1f} s; slowest evaluate {slowest:.3f} s")
    ticks = page.evaluate("clearInterval(window.__tick), window.__ticks")
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    shot(page, "console-50mb")
    print(f"max timer gap {max(gaps):.0f} ms; gap notes {page.locator('.ln.gap').count()}")
    assert slowest < 1.0, f"page.evaluate took {slowest:.2f} s while output streamed"
    assert max(gaps) < 1000, f"the page's timer stalled for {max(gaps):.0f} ms"
    shown = page.locator("#term-lines .ln").count()
    assert shown <= 5002  # the bound, plus the in-progress line
    assert page.is_visible("#term-hidden")
    hidden = int(page.text_content("#term-hidden-count").replace(",", ""))
    assert hidden > 1_000_000
    assert page.get_attribute("#term-hidden-link", "href").endswith("/output?download=1")
    # The end of the output is intact and in order.
    tail = [line for line in console.output_lines()][-5:]
    assert tail == [str(n) for n in range(last - 4, last + 1)]


def test_auto_scroll_pauses_and_resumes(console):
    page = console.page
    console.run(emit_command(*[f"out:{hexed(f'row {n}' + chr(10))}:0.03" for n in range(90)]))
    console.wait_for_line("row 60")
    at_bottom = (
        "() => { const t = document.querySelector('#term'); return t.scrollHeight - t.scrollTop - t.clientHeight < 8; }"
    )
    assert page.evaluate(at_bottom)
    page.mouse.move(800, 400)
    page.mouse.wheel(0, -600)
    page.wait_for_selector("#follow:not([hidden])")
    console.wait_for_line("row 80")
    assert not page.evaluate(at_bottom)  # new lines did not pull the reader down
    page.click("#follow")
    page.wait_for_selector("#follow", state="hidden")
    console.wait_for_line("row 89")
    console.wait_for_badge("exit 0")
    assert page.evaluate(at_bottom)


def test_phone_layout(context, server):
    phone = context.new_page()
    phone.set_viewport_size(PHONE)
    c = Console(phone, server).open()
    c.wait_live()
    c.run(emit_command("out:" + hexed("\x1b[36mphone\x1b[0m output\n"), "err:" + hexed("and an error\n")))
    c.wait_for_badge("exit 0")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "the page scrolls sideways on a phone"
    assert phone.is_visible("#stop") and phone.is_visible("#command")
    shot(phone, "console-phone")
    phone.screenshot(path=str(shot(phone, "console-phone").with_name("console-phone-full.png")), full_page=True)


def test_chat_between_two_pages(context, server):
    alice = context.new_page()
    alice.goto(server.url("/chat?channel=room-1"))
    alice.wait_for_selector("#conn[data-state=live]")
    bob = context.new_page()
    bob.goto(server.url("/chat?channel=room-1"))
    bob.wait_for_selector("#conn[data-state=live]")

    alice.fill("#message", "hello <b>bob</b>")
    alice.press("#message", "Enter")
    bob.wait_for_selector(".msg .msg-text >> text=hello <b>bob</b>")
    alice.wait_for_selector(".msg .msg-text >> text=hello <b>bob</b>")
    assert bob.locator(".msg b").count() == 0
    # Published by anyone else: JSON data shows as JSON.
    httpx.post(server.url("/channels/room-1/messages"), json={"data": {"deploy": "done"}}, timeout=5)
    bob.wait_for_selector('.msg .msg-text.json >> text={"deploy":"done"}')
    # A late joiner gets the history.
    carol = context.new_page()
    carol.goto(server.url("/chat?channel=room-1"))
    carol.wait_for_selector(".msg .msg-text >> text=hello <b>bob</b>")
    assert carol.locator(".msg").count() == 2
    shot(bob, "chat")


def test_retries_after_proxy_errors_and_204(console):
    """A browser gives up for good on a non-200 answer; the page does not."""
    page = console.page
    refusals = [503, 204]
    served = []

    def refuse(route):
        if not refusals:
            route.continue_()
            return
        status = refusals.pop(0)
        served.append(status)
        route.fulfill(status=status, body="" if status == 204 else "<h1>502 Bad Gateway</h1>", content_type="text/html")

    record_conn_states(page)
    page.route("**/events?*", refuse)
    # Opening the new job reopens the stream, which meets a 503 and then a 204 from "the proxy".
    console.run(emit_command(*[f"out:{hexed(f'beat {n}' + chr(10))}:0.05" for n in range(1, 41)]))
    wait_reconnected(page)
    console.wait_for_badge("exit 0", timeout=15_000)
    # The badge may know the end first (the job's metadata, fetched before reconnecting); the output follows.
    console.wait_for_line("beat 40")
    assert served == [503, 204]
    assert console.output_lines() == [f"beat {n}" for n in range(1, 41)]


def test_chat_retries_after_a_bad_gateway(context, server):
    page = context.new_page()
    page.goto(server.url("/chat?channel=flaky"))
    page.wait_for_selector("#conn[data-state=live]")
    httpx.post(server.url("/channels/flaky/messages"), json={"data": "before"}, timeout=5)
    page.wait_for_selector(".msg-text:text-is('before')")
    record_conn_states(page)
    refusals = [502]

    def refuse(route):
        if refusals:
            refusals.pop()
            route.fulfill(status=502, body="bad gateway", content_type="text/plain")
        else:
            route.continue_()

    page.route("**/channels/flaky/events*", refuse)
    # Cut the live stream the way a proxy restart would: the next attempt gets a 502.
    page.evaluate("window.sseCommander.stream.source.dispatchEvent(new Event('error'))")
    httpx.post(server.url("/channels/flaky/messages"), json={"data": "during"}, timeout=5)
    wait_reconnected(page)
    page.wait_for_selector(".msg-text:text-is('during')")
    assert page.locator(".msg-text").all_text_contents() == ["before", "during"]


TERMINAL_CASES = r"""async () => {
    const { Terminal } = await import('/static/terminal.js');
    const make = (maxLines = 50) => {
        const lines = document.createElement('div');
        const t = new Terminal({
            linesEl: lines, hiddenEl: document.createElement('div'),
            hiddenCountEl: document.createElement('span'), maxLines,
        });
        return { t, lines };
    };
    const run = (chunks, maxLines) => {
        const { t, lines } = make(maxLines);
        for (const group of chunks) {
            for (const [stream, text] of group) t.write(text, stream);
            t.flush();
        }
        const all = [...lines.children];
        const shown = all.filter((e) => !(e.classList.contains('cur') && !e.textContent));
        return {
            text: shown.map((e) => e.textContent),
            html: shown.map((e) => [...e.children].map((c) => [c.className, c.textContent, c.style.color])),
            hidden: t.hiddenLines,
        };
    };
    return {
        splitEscape: run([[['out', 'a\x1b[3']], [['out', '1mred\x1b[0m\n']]]),
        splitCrLf: run([[['out', '50%\r']], [['out', '\n']], [['out', 'next\n']]]),
        backspace: run([[['out', 'abc\x08d\n']]]),
        eraseLine: run([[['out', 'progress 1\r\x1b[2Kprogress 2\n']]]),
        osc: run([[['out', '\x1b]0;a title\x07text\n']]]),
        blob: run([[['out', 'x'.repeat(20000) + '\n']]]).text.map((l) => l.length),
        bound: run([[['out', Array.from({ length: 1000 }, (_, i) => `${i}\n`).join('')]]]),
        boundChunks: run(Array.from({ length: 100 }, (_, c) =>
            [['out', Array.from({ length: 30 }, (_, i) => `${c * 30 + i}\n`).join('')]])),
        colourThroughSkip: run([[['out', '\x1b[32m' + 'g\n'.repeat(1000) + 'still green\n']]]),
        trueColour: run([[['out', '\x1b[38;2;1;2;3mx\x1b[0m\n']]]),
        inverse: run([[['out', '\x1b[7mi\x1b[0m\n']]]),
        mixed: run([[['out', 'out '], ['err', 'err\n']]]),
    };
}"""


def test_terminal_edge_cases(console):
    cases = console.page.evaluate(TERMINAL_CASES)
    assert cases["splitEscape"]["text"] == ["ared"]
    assert cases["splitEscape"]["html"] == [[["fg-1", "red", ""]]]
    assert cases["splitCrLf"]["text"] == ["50%", "next"]
    assert cases["backspace"]["text"] == ["abd"]
    assert cases["eraseLine"]["text"] == ["progress 2"]
    assert cases["osc"]["text"] == ["text"]
    assert cases["blob"] == [8192, 8192, 3616]
    assert cases["bound"]["text"] == [str(n) for n in range(950, 1000)]
    assert cases["bound"]["hidden"] == 950
    assert cases["boundChunks"]["text"] == [str(n) for n in range(2950, 3000)]
    assert cases["boundChunks"]["hidden"] == 2950
    assert cases["colourThroughSkip"]["html"][-1] == [["fg-2", "still green", ""]]
    assert cases["trueColour"]["html"] == [[["", "x", "rgb(1, 2, 3)"]]]
    assert cases["inverse"]["html"] == [[["fg-inv bg-inv", "i", ""]]]
    assert cases["mixed"]["text"] == ["out err"]
    assert cases["mixed"]["html"] == [[["e", "err", ""]]]


FLOOD_FLUSHES = r"""async () => {
    const { Terminal } = await import('/static/terminal.js');
    const lines = document.createElement('div');
    const t = new Terminal({
        linesEl: lines, hiddenEl: document.createElement('div'),
        hiddenCountEl: document.createElement('span'), maxLines: 50, floodLines: 5,
    });
    const built = [];
    const flooded = [];
    const write = (from, to) => t.write(Array.from({ length: to - from }, (_, i) => `${from + i}\n`).join(''));
    write(0, 1000);
    built.push(t.flush());
    flooded.push(t.flooded);
    write(1000, 2000);  // more than the screen holds again: the next flush finds a flood too
    built.push(t.flush());
    flooded.push(t.flooded);
    while (t.pending) {
        built.push(t.flush());
        flooded.push(t.flooded);
    }
    const shown = [...lines.children].filter((e) => !(e.classList.contains('cur') && !e.textContent));
    return { built, flooded, text: shown.map((e) => e.textContent), hidden: t.hiddenLines };
}"""


def test_a_flush_that_finds_a_flood_builds_a_screenful_and_the_rest_follows(console):
    found = console.page.evaluate(FLOOD_FLUSHES)
    # A flood's flush builds floodLines (a screenful) however much is queued; later flushes build the rest.
    assert found["built"][:2] == [5, 5] and found["flooded"][:2] == [True, True]
    assert not any(found["flooded"][2:]) and sum(found["built"][2:]) == 45  # the cut kept 50 lines, 5 built at once
    assert found["text"] == [str(n) for n in range(1950, 2000)]
    assert found["hidden"] == 1950
