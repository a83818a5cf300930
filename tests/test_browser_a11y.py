"""Accessibility and phones (issue 18, item 8), in a real headless Chromium.

axe-core (the npm package, pinned in tests/package.json) finds no serious or critical violation on the console and
the chat page, at a desktop width and a phone's, with content on them: jobs that ran, failed and run, an open job,
action forms, chat messages. On a phone every control is at least 44 px high and wide. A job's end is announced to
screen readers in a status region.
"""

from __future__ import annotations

import json

import httpx
import pytest

from .axe_support import axe_violations, load_axe, summary
from .browser_support import (  # noqa: F401 - fixtures
    PHONE,
    Console,
    browser_fixture,
    context_fixture,
    emit_command,
    hexed,
    page_fixture,
    shot,
)
from .server import GunicornServer

WIDE = {"width": 1400, "height": 900}
ACTIONS = {
    "greet": {
        "description": "Say hello",
        "argv": ["echo", "hello", "{name}"],
        "params": {"name": {"type": "string", "pattern": "[a-z]{1,10}"}},
    },
    "pick": {"argv": ["echo", "{env}"], "params": {"env": {"type": "choice", "choices": ["staging", "prod"]}}},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GunicornServer(
        tmp_path_factory.mktemp("a11y"), {"SSECMD_ACTIONS": json.dumps(ACTIONS), "SSECMD_HEARTBEAT_INTERVAL": "5"}
    ).start()
    # Something in the job list: a success, a failure, one still running.
    for body in ({"command": "echo fine"}, {"command": "ls /nonexistent"}, {"command": "sleep 120"}):
        httpx.post(srv.url("/jobs"), json=body, timeout=5)
    for text in ("hello", "deploy at five"):
        httpx.post(srv.url("/channels/chat/messages"), json={"data": text}, timeout=5)
    httpx.post(srv.url("/channels/ops/messages"), json={"data": "other channel"}, timeout=5)
    yield srv
    srv.stop()


def _console_with_content(page, server, viewport) -> Console:
    page.set_viewport_size(viewport)
    load_axe(page)
    console = Console(page, server).open()
    console.wait_live()
    console.run(emit_command("out:" + hexed("some output\n"), "err:" + hexed("an error line\n")))
    console.wait_for_badge("exit 0")
    page.wait_for_selector("#jobs button.job >> nth=3")
    return console


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1400px", "390px"])
def test_console_has_no_serious_axe_violations(page, server, viewport):
    _console_with_content(page, server, viewport)
    # An action form open, as someone about to run it would have it.
    page.click("details.action >> text=pick")
    found = axe_violations(page)
    shot(page, f"a11y-console-{viewport['width']}")
    assert not found, summary(found)
    assert page.locator("main:not([hidden]) h1").count() == 1


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1400px", "390px"])
def test_chat_has_no_serious_axe_violations(page, server, viewport):
    page.set_viewport_size(viewport)
    load_axe(page)
    page.goto(server.url("/chat"))
    page.wait_for_selector("#conn[data-state=live]")
    page.wait_for_selector(".msg-text:text-is('deploy at five')")
    found = axe_violations(page)
    shot(page, f"a11y-chat-{viewport['width']}")
    assert not found, summary(found)
    assert page.locator("main:not([hidden]) h1").count() == 1


TARGETS = """() => {
    const small = [];
    for (const node of document.querySelectorAll('a[href], button, input, select, textarea, summary, [tabindex]')) {
        if (node.closest('[hidden]') || node.matches('.skip-link, #term, .sr-only')) continue;
        // A link inside a sentence is exempt (WCAG 2.5.5): it is as tall as the text around it.
        if (node.matches('a') && node.closest('p')) continue;
        const box = node.getBoundingClientRect();
        if (box.width === 0 && box.height === 0) continue;
        if (box.height < 44 || box.width < 44) {
            small.push(`${node.id || node.className || node.tagName} ${node.textContent.trim().slice(0, 20)}: ` +
                       `${Math.round(box.width)}x${Math.round(box.height)}`);
        }
    }
    return small;
}"""


def test_phone_tap_targets_are_44_px(page, server):
    _console_with_content(page, server, PHONE)
    page.click("details.action >> text=pick")
    small = page.evaluate(TARGETS)
    shot(page, "a11y-phone-targets")
    assert not small, small
    page.goto(server.url("/chat"))
    page.wait_for_selector(".msg-text:text-is('hello')")
    small = page.evaluate(TARGETS)
    assert not small, small


def test_the_end_of_a_job_is_announced(page, server):
    console = Console(page, server).open()
    console.wait_live()
    region = page.locator("#announce")
    assert region.get_attribute("role") == "status"
    console.run(emit_command("out:" + hexed("working\n") + ":0.5"))
    console.wait_for_badge("exit 0")
    page.wait_for_function("() => document.querySelector('#announce').textContent.includes('exit 0')")
    assert "emit.py" in region.text_content()
