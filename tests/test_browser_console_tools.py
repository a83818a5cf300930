"""The console's tools for all-day use (issue 18, items 4, 5 and 7), in a real headless Chromium.

The command box does not pretend to be a shell: text a shell would treat as a pipe, a redirection or a
substitution gets an inline warning and "run anyway"; the allowed commands are shown as chips with a count; the
placeholder is a command that is allowed; arrow keys walk through what was typed in this browser. Named actions
cannot run by accident: a choice without a default starts unchosen and Run waits for it; an action marked
`confirm = true` asks first, naming itself and its parameters, and the API refuses it unconfirmed. The job list
has a text filter, state chips with counts, a failed count, one Tab stop with arrow keys, and the toolbar comes
before it in tab order.
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
    shot,
)
from .server import GunicornServer

ACTIONS = {
    "pick": {
        "argv": ["echo", "picked", "{env}"],
        "params": {"env": {"type": "choice", "choices": ["staging", "prod"]}},
    },
    "wipe": {
        "description": "Wipe a cache",
        "argv": ["echo", "wiping", "{target}", "{level}"],
        "confirm": True,
        "params": {
            "target": {"type": "choice", "choices": ["cdn", "db"]},
            "level": {"type": "integer", "min": 1, "max": 3, "default": 1},
        },
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GunicornServer(
        tmp_path_factory.mktemp("tools"),
        {"SSECMD_ACTIONS": json.dumps(ACTIONS), "SSECMD_HEARTBEAT_INTERVAL": "5"},
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def console(page, server):
    c = Console(page, server).open()
    c.wait_live()
    return c


def _posts(page) -> list[dict]:
    posts: list[dict] = []
    page.on("request", lambda r: posts.append(r.post_data_json) if r.method == "POST" and r.url.endswith("/jobs")
            else None)
    return posts


def test_no_shell_warning_and_run_anyway(console):
    page = console.page
    posts = _posts(page)
    page.fill("#command", "ls | head")
    page.wait_for_selector("#shell-warning:not([hidden])")
    assert "no shell" in page.text_content("#shell-warning")
    assert page.locator("#shell-chars code").all_text_contents() == ["|"]
    # Enter warns instead of running.
    page.press("#command", "Enter")
    page.wait_for_timeout(300)
    assert posts == []
    assert page.evaluate("document.activeElement.id") == "run-anyway"
    shot(page, "console-shell-warning")
    page.click("#run-anyway")
    console.wait_for_badge("exit 2")  # ls was given '|' and 'head' as file names
    assert posts == [{"command": "ls | head"}]
    assert any("cannot access" in line and "|" in line for line in console.output_lines()), console.output_lines()

    # Every operator is caught; quoted text is what it says and gets no warning.
    cases = {
        "echo a > b": [">"], "sort < f": ["<"], "echo a; echo b": [";"], "true && echo ok": ["&&"],
        "echo $(date)": ["$("], "echo `date`": ["`"], 'echo "$(id)"': ["$("],
        "echo 'a|b' \"x > y\" c\\;d": [], "echo plain": [],
    }
    for text, chars in cases.items():
        page.fill("#command", text)
        shown = page.is_visible("#shell-warning")
        assert shown == bool(chars), text
        if chars:
            assert page.locator("#shell-chars code").all_text_contents() == chars, text


def test_allowed_commands_chips_placeholder_and_history(console, server):
    page = console.page
    commands = httpx.get(server.url("/actions"), timeout=5).json()["commands"]
    # Visible without expanding anything, with their count.
    chips = page.locator("#allowed .chip")
    assert chips.count() == len(commands)
    assert chips.first.is_visible()
    assert page.text_content("#allowed-count") == str(len(commands))
    placeholder = page.get_attribute("#command", "placeholder")
    assert placeholder.split()[0] in commands
    chips.filter(has_text="seq").click()
    assert page.input_value("#command") == "seq "

    for command in ("echo one", "echo two", "seq 2"):
        console.run(command)
        console.wait_for_badge("exit 0")
    page.reload()
    console.wait_live()
    page.focus("#command")
    page.keyboard.type("draft")
    walked = []
    for _ in range(4):
        page.keyboard.press("ArrowUp")
        walked.append(page.input_value("#command"))
    assert walked == ["seq 2", "echo two", "echo one", "echo one"]  # the oldest stays
    page.keyboard.press("ArrowDown")
    assert page.input_value("#command") == "echo two"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.input_value("#command") == "draft"  # past the newest: what was being typed
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    console.wait_for_line("2")


def test_choice_without_default_waits_and_confirm_asks(console, server):
    page = console.page
    posts = _posts(page)
    page.click("details.action >> text=pick")
    assert page.input_value("#action-pick-env") == ""  # nothing chosen for the user
    submit = page.locator("form[data-action=pick] button[type=submit]")
    assert submit.is_disabled()
    assert "Choose env" in page.text_content("form[data-action=pick] .form-foot")
    page.select_option("#action-pick-env", "prod")
    assert submit.is_enabled()
    submit.click()
    console.wait_for_line("picked prod")

    page.click("details.action >> text=wipe")
    wipe = page.locator("form[data-action=wipe] button[type=submit]")
    assert wipe.is_disabled()
    page.select_option("#action-wipe-target", "db")
    wipe.click()
    dialog = page.locator("#confirm-dialog")
    assert dialog.is_visible()
    assert page.text_content("#confirm-title") == "Run wipe?"
    assert page.locator("#confirm-params dt").all_text_contents() == ["target", "level"]
    assert page.locator("#confirm-params dd").all_text_contents() == ["db", "1"]
    shot(page, "console-confirm")
    page.click("#confirm-dialog button[value=cancel]")
    assert not dialog.is_visible()
    page.wait_for_timeout(200)
    assert [p for p in posts if p.get("action") == "wipe"] == []
    wipe.click()
    page.click("#confirm-run")
    console.wait_for_line("wiping db 1")
    assert [p for p in posts if p.get("action") == "wipe"] == [
        {"action": "wipe", "params": {"target": "db", "level": 1}, "confirm": True}
    ]

    # The API requires the confirmation too, with a JSON reason.
    listed = {a["name"]: a for a in httpx.get(server.url("/actions"), timeout=5).json()["actions"]}
    assert listed["wipe"]["confirm"] is True and listed["pick"]["confirm"] is False
    refused = httpx.post(server.url("/jobs"), json={"action": "wipe", "params": {"target": "db"}}, timeout=5)
    assert refused.status_code == 400
    assert refused.json()["message"] == """action 'wipe' must be confirmed: send "confirm": true"""


def test_job_list_filter_chips_and_keyboard(console, server):
    page = console.page
    ok = console.run("echo findme-ok")
    console.wait_for_badge("exit 0")
    failed = console.run("ls /nonexistent-findme")
    console.wait_for_badge("exit 2")
    cancelled = httpx.post(server.url("/jobs"), json={"command": "sleep 60s"}, timeout=5).json()["id"]
    running = httpx.post(server.url("/jobs"), json={"command": "sleep 61s"}, timeout=5).json()["id"]
    console.wait_job_state(running, "running")
    httpx.delete(server.url(f"/jobs/{cancelled}"), timeout=5)
    console.wait_job_state(cancelled, "cancelled")

    def visible_ids():
        return page.eval_on_selector_all("#jobs button.job", "els => els.map(e => e.dataset.id)")

    counts = {chip: page.text_content(f".state-chip[data-filter={chip}] .n") for chip in ("running", "failed",
                                                                                         "cancelled")}
    assert all(int(n) >= 1 for n in counts.values()), counts
    assert f"{counts['failed']} failed" in page.text_content("#jobs-count")

    page.fill("#jobs-filter", "findme")
    assert set(visible_ids()) == {ok, failed}
    page.fill("#jobs-filter", ok[:6])  # by id
    assert visible_ids() == [ok]
    page.fill("#jobs-filter", "anonymous sleep 61s")  # by user and command; "61s" is no hex id's part
    assert visible_ids() == [running]
    page.fill("#jobs-filter", "")
    page.click(".state-chip[data-filter=failed]")
    assert page.get_attribute(".state-chip[data-filter=failed]", "aria-pressed") == "true"
    assert failed in visible_ids() and ok not in visible_ids() and running not in visible_ids()
    page.click(".state-chip[data-filter=cancelled]")
    assert set(visible_ids()) >= {failed, cancelled} and ok not in visible_ids()
    shot(page, "console-job-filter")
    page.click(".state-chip[data-filter=failed]")
    page.click(".state-chip[data-filter=cancelled]")
    assert ok in visible_ids()

    # Tab order: the toolbar (Wrap, Raw, Download, Stop) before the list; the list is one Tab stop.
    console.job_item(running).click()
    order = []
    page.focus("#command")
    for _ in range(60):
        page.keyboard.press("Tab")
        active = page.evaluate("(() => { const e = document.activeElement;"
                               " return e.id || (e.classList.contains('job') ? 'job' : e.className); })()")
        order.append(active)
        if active == "command":
            break
    for tool in ("wrap-toggle", "raw-link", "download-link", "stop"):
        assert tool in order, order
    assert order.index("stop") < order.index("job"), order
    assert order.count("job") == 1, order
    # Arrow keys move within the list, and the Tab stop moves with them.
    page.focus("#jobs button.job[tabindex='0']")
    first = page.evaluate("document.activeElement.dataset.id")
    page.keyboard.press("Home")
    top = page.evaluate("document.activeElement.dataset.id")
    page.keyboard.press("ArrowDown")
    second = page.evaluate("document.activeElement.dataset.id")
    assert second != top and first in visible_ids()
    assert page.locator("#jobs button.job[tabindex='0']").count() == 1
    assert page.get_attribute(f"#jobs button.job[data-id='{second}']", "tabindex") == "0"
    page.keyboard.press("End")
    assert page.evaluate("document.activeElement.dataset.id") == visible_ids()[-1]
    page.keyboard.press("Enter")
    page.wait_for_function("id => document.querySelector(`#jobs button.job[data-id='${id}']`)"
                           ".getAttribute('aria-current') === 'true'", arg=visible_ids()[-1])
    httpx.delete(server.url(f"/jobs/{running}"), timeout=5)
