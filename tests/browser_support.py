"""A real headless Chromium, driven by Playwright, for the browser tests (tests/test_browser*.py).

Debian's ``chromium`` is used as is (``executable_path``); Playwright's own browser downloads are never
needed. Each test module gets one browser; each test a fresh context (its own profile: cookies, storage).
Every page records Content-Security-Policy violations and uncaught errors, and a test fails if any occurred:
the pages must work under the server's strict CSP with no inline script or style.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import pytest

from .server import PYTHON, REPO, helper

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (see setup.cfg [test])")

CHROMIUM = os.environ.get("SSECMD_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "tests" / "artifacts"
DESKTOP = {"width": 1360, "height": 820}
PHONE = {"width": 390, "height": 844}
EMIT = helper("emit.py")

# Watches for CSP violations and errors from the first moment of every document.
_WATCH = """
window.__problems = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__problems.push('CSP: ' + e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sample || ''));
});
window.addEventListener('error', (e) => { window.__problems.push('error: ' + e.message); });
window.addEventListener('unhandledrejection', (e) => { window.__problems.push('rejection: ' + e.reason); });
window.alert = window.confirm = window.prompt = (m) => { window.__problems.push('dialog: ' + m); };
"""


def emit_command(*parts: str) -> str:
    """A command line running tests/helpers/emit.py (exact bytes to stdout/stderr, with sleeps)."""
    return " ".join([PYTHON, EMIT, *parts])


def hexed(text: str | bytes) -> str:
    """Bytes as the hex emit.py wants."""
    return (text.encode() if isinstance(text, str) else text).hex()


# The fixtures have other names than the values they give, so that test modules can import them without
# shadowing their own parameters: ``from .browser_support import browser_fixture, ...``.
@pytest.fixture(scope="module", name="browser")
def browser_fixture():
    """One headless Chromium for the module."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with playwright_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30_000)
        yield launched
        launched.close()


@pytest.fixture(name="context")
def context_fixture(browser):
    """A fresh browser profile for one test; fails the test on any CSP violation, page error or dialog."""
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(10_000)
    ctx.add_init_script(_WATCH)
    problems: list[str] = []

    def watch(page):
        page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
        page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        page.on(
            "console",
            lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None,
        )

    ctx.on("page", watch)
    yield ctx
    for page in ctx.pages:
        with contextlib.suppress(playwright_api.Error):
            problems.extend(page.evaluate("window.__problems || []"))
    ctx.close()
    assert not problems, problems


@pytest.fixture(name="page")
def page_fixture(context):
    """A page in the test's fresh context."""
    return context.new_page()


def shot(page, name: str) -> Path:
    """Save a screenshot to tests/artifacts/<name>.png (git-ignored) for people to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


class Console:
    """The console page, as a person would use it."""

    def __init__(self, page, server) -> None:
        self.page = page
        self.server = server

    def open(self, path: str = "/") -> Console:
        self.page.goto(self.server.url(path))
        return self

    def wait_live(self, timeout: float = 10_000) -> None:
        self.page.wait_for_selector("#conn[data-state=live]", timeout=timeout)

    def run(self, command: str) -> str:
        """Type a command and press Enter; returns the new job's id."""
        self.page.fill("#command", command)
        with self.page.expect_response(lambda r: r.url.endswith("/jobs") and r.request.method == "POST") as info:
            self.page.press("#command", "Enter")
        response = info.value
        assert response.status == 201, response.text()
        return response.json()["id"]

    def lines(self) -> list[str]:
        """The text of every output line on screen (command echo and end notes included)."""
        return self.page.eval_on_selector_all("#term-lines .ln", "els => els.map(e => e.textContent)")

    def output_lines(self) -> list[str]:
        """Only the lines the command printed."""
        return self.page.eval_on_selector_all(
            "#term-lines .ln:not(.note)",
            "els => els.filter(e => !(e.classList.contains('cur') && !e.textContent)).map(e => e.textContent)",
        )

    def wait_for_line(self, text: str, timeout: float = 10_000) -> None:
        self.page.wait_for_function(
            "t => [...document.querySelectorAll('#term-lines .ln')].some(e => e.textContent === t)",
            arg=text,
            timeout=timeout,
        )

    def wait_for_badge(self, text: str, timeout: float = 10_000) -> None:
        """Wait for the badge to say ``text`` and the output that came with it to be on screen.

        The badge changes as soon as the end is heard; the output is drawn on the next animation frame.
        """
        self.page.wait_for_function(
            "t => { const b = document.querySelector('#job-state');"
            " return b && !b.hidden && b.textContent === t && !window.sseCommander.term.pending; }",
            arg=text,
            timeout=timeout,
        )

    def job_item(self, job_id: str):
        return self.page.locator(f"#jobs button.job[data-id='{job_id}']")

    def wait_job_state(self, job_id: str, state: str, timeout: float = 10_000) -> None:
        self.page.wait_for_selector(f"#jobs button.job[data-id='{job_id}'][data-state='{state}']", timeout=timeout)


_RECORD_STATES = """() => {
    window.__states = [document.querySelector('#conn').dataset.state];
    new MutationObserver(() => window.__states.push(document.querySelector('#conn').dataset.state))
        .observe(document.querySelector('#conn'), {attributes: true, attributeFilter: ['data-state']});
}"""


def record_conn_states(page) -> None:
    """From now on, collect every state of the connection pill in ``window.__states``."""
    page.evaluate(_RECORD_STATES)


def wait_reconnected(page, timeout: float = 20_000) -> None:
    """Wait until the pill said "reconnecting" and is "live" again."""
    page.wait_for_function("() => window.__states.includes('reconnecting')", timeout=timeout)
    page.wait_for_function(
        "() => window.__states.includes('reconnecting') && document.querySelector('#conn').dataset.state === 'live'",
        timeout=timeout,
    )


def wait_for(predicate, timeout: float = 10, interval: float = 0.05, message: str = "condition"):
    """Poll a Python predicate."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")
