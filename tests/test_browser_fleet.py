"""The fleet page (issue 20) in a real headless Chromium against the real gunicorn server.

On the memory store the fleet is this host alone: the picker lists it (up, picked), a run starts with POST /runs
and shows a pane with the host's output, its state badge and exit code, the run's aggregate state; a named action
with its parameters (errors at the field, a confirmation when it asks for one), a timeout, parallel and
stop_on_failure travel with the run; the recent runs (GET /runs) list them newest first and open each; the failed
filter and the interleaved view; the run reopens from its URL after a reload with nothing shown twice; Cancel ends
a running one. axe-core finds no serious or critical violation on the page with a run open, and on a phone every
control is 44 px at least. Over tests/test_fleet.py's three hosts on one Redis: the picker's tags pick them, and a
run shows three panes, one of them failed.
"""

from __future__ import annotations

import json
import shlex
import shutil

import httpx
import pytest

from .axe_support import axe_violations, load_axe, summary
from .browser_support import (  # noqa: F401 - fixtures
    PHONE,
    browser_fixture,
    context_fixture,
    emit_command,
    hexed,
    page_fixture,
    shot,
)
from .server import PYTHON, GunicornServer
from .test_browser_a11y import TARGETS
from .test_fleet import ADMIN, DBOPS, fleet  # noqa: F401 - the three-host fixture

HOST = "fleet-local"
WIDE = {"width": 1400, "height": 900}


# Named actions the page offers beside a command (GET /actions), as the console does.
ACTIONS = {
    "greet": {
        "description": "Say hello to someone",
        "argv": ["echo", "hello", "{name}"],
        "params": {"name": {"type": "string", "pattern": "[a-z]{1,10}", "description": "lower-case name"}},
    },
    "deploy": {
        "argv": ["echo", "deploying", "{env}"], "confirm": True,
        "params": {"env": {"type": "choice", "choices": ["staging", "prod"]}},
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GunicornServer(
        tmp_path_factory.mktemp("fleet"),
        {"SSECMD_HOST_NAME": HOST, "SSECMD_HEARTBEAT_INTERVAL": "5", "SSECMD_ACTIONS": json.dumps(ACTIONS)},
    ).start()
    yield srv
    srv.stop()


def wait_run_state(page, state: str, timeout: float = 15_000) -> None:
    """The aggregate badge says ``state``, every event that came is handled and drawn, and for a run that has
    ended, its stream has ended too (the badge can say so first: the page reads the run's record before it opens
    the stream, and a short run may have ended by then)."""
    page.wait_for_function(
        "s => document.querySelector('#run-state').textContent === s"
        " && !window.sseFleet.inbox.length && window.sseFleet.dirty.size === 0"
        " && (s === 'running' || window.sseFleet.state.done)",
        arg=state,
        timeout=timeout,
    )


class Fleet:
    """The fleet page, as a person would use it."""

    def __init__(self, page, server) -> None:
        self.page = page
        self.server = server

    def open(self, path: str = "/fleet") -> Fleet:
        self.page.goto(self.server.url(path))
        self.page.wait_for_selector(f"#host-list li[data-host='{HOST}']")
        return self

    def run(self, command: str) -> str:
        """Type a command and press Enter; returns the new run's id."""
        self.page.fill("#fleet-command", command)
        with self.page.expect_response(lambda r: r.url.endswith("/runs") and r.request.method == "POST") as info:
            self.page.press("#fleet-command", "Enter")
        assert info.value.status == 201, info.value.text()
        return info.value.json()["id"]

    def pane(self, host: str = HOST):
        return self.page.locator(f".pane[data-host='{host}']")

    def wait_run_state(self, state: str, timeout: float = 15_000) -> None:
        wait_run_state(self.page, state, timeout)

    def pane_lines(self, host: str = HOST) -> list[str]:
        return self.pane(host).locator(".term-lines .ln:not(.note)").evaluate_all(
            "els => els.filter(e => e.textContent).map(e => e.textContent)"
        )

    def interleaved_lines(self) -> list[str]:
        return self.page.eval_on_selector_all("#il-lines .ln", "els => els.map(e => e.textContent)")


@pytest.fixture
def fleet_page(page, server):
    return Fleet(page, server).open()


def test_picker_run_pane_interleaved_and_reload(fleet_page):
    page = fleet_page.page
    # The memory store's fleet: this host, up, already picked.
    item = page.locator(f"#host-list li[data-host='{HOST}']")
    assert item.get_attribute("data-state") == "up"
    assert page.is_checked(f"#host-list input[value='{HOST}']")
    run_id = fleet_page.run(emit_command("out:" + hexed("first <b>line</b>\n") + ":1", "err:" + hexed("an error\n")))
    pane = fleet_page.pane()
    # Live: the first line shows while the command still sleeps.
    page.wait_for_selector(f".pane[data-host='{HOST}'] .ln:text-is('first <b>line</b>')")
    assert pane.locator(".badge").text_content() == "running"
    assert page.text_content("#run-state") == "running"
    # A new connection resumes where the old one was (?last_event_id=): nothing is shown twice.
    with page.expect_request(lambda r: "/events?last_event_id=" in r.url):
        page.evaluate("window.sseFleet.stream.open()")
    fleet_page.wait_run_state("succeeded")
    assert fleet_page.pane_lines() == ["first <b>line</b>", "an error"]
    assert pane.locator(".badge").text_content() == "succeeded"
    assert pane.locator(".pane-exit").text_content() == "exit 0"
    assert pane.locator(".ln.has-e").count() == 1
    assert page.locator(".pane b").count() == 0  # output is text, never markup
    assert page.url.endswith(f"/fleet#run={run_id}")
    assert "1 succeeded" in page.text_content("#run-meta")
    shot(page, "fleet-panes")

    # One view of every host's lines, each after its host's name.
    page.click("#view-toggle")
    assert page.get_attribute("#view-toggle", "aria-pressed") == "true"
    assert page.is_hidden("#panes")
    page.wait_for_selector("#il-lines .ln")
    lines = fleet_page.interleaved_lines()
    assert lines[:2] == [f"{HOST} │ first <b>line</b>", f"{HOST} │ an error"]
    assert lines[-1] == f"{HOST} │ [succeeded · exit 0]"
    assert page.locator(f"#il-lines .il-host.hc-0:text-is('{HOST}')").count() == len(lines)

    # A reload reopens the run (the view is remembered) and shows its output once.
    page.reload()
    fleet_page.wait_run_state("succeeded")
    page.wait_for_selector("#il-lines .ln >> nth=2")
    assert fleet_page.interleaved_lines() == lines
    page.click("#view-toggle")
    assert fleet_page.pane_lines() == ["first <b>line</b>", "an error"]


def test_failed_filter_and_cancel(fleet_page):
    page = fleet_page.page
    # A request the server refuses (400 naming its parameter): said under the form, at the field.
    page.fill("#fleet-command", "echo 'unclosed")
    with page.expect_response(lambda r: r.url.endswith("/runs") and r.request.method == "POST") as info:
        page.press("#fleet-command", "Enter")
    assert info.value.status == 400 and info.value.json()["parameter"] == "command", info.value.text()
    page.wait_for_selector("#fleet-error:not([hidden])")
    assert page.get_attribute("#fleet-command", "aria-invalid") == "true"
    # The run's options travel with it.
    page.fill("#fleet-parallel", "1")
    page.check("#fleet-stop")
    with page.expect_request(lambda r: r.url.endswith("/runs") and r.method == "POST") as sent:
        fleet_page.run("ls /nonexistent-fleet-dir")
    assert sent.value.post_data_json == {"command": "ls /nonexistent-fleet-dir", "hosts": [HOST], "parallel": 1,
                                         "stop_on_failure": True}
    assert page.is_hidden("#fleet-error")
    fleet_page.wait_run_state("failed")
    assert "1 at a time · stops on failure" in page.text_content("#run-meta")
    page.fill("#fleet-parallel", "")
    page.uncheck("#fleet-stop")
    pane = fleet_page.pane()
    assert pane.locator(".badge").text_content() == "failed"
    assert pane.locator(".pane-exit").text_content() == "exit 2"
    assert page.text_content("#failed-count") == "1"
    page.click("#failed-only")
    assert page.get_attribute("#failed-only", "aria-pressed") == "true"
    assert pane.is_visible()
    page.wait_for_function("() => document.querySelector('#announce').textContent.includes('failed')")

    # A command this host's allowlist refuses: the host is refused, and says why.
    fleet_page.run("rm /nonexistent-fleet-file")
    fleet_page.wait_run_state("failed")
    assert pane.locator(".badge").text_content() == "refused"
    assert pane.locator(".pane-exit").text_content() == ""
    end = pane.locator(".ln.note.end").text_content()
    assert end.startswith("[refused · ") and "rm" in end, end
    assert pane.is_visible()

    # A run that succeeds: with the filter on, no pane, and a word saying why.
    fleet_page.run("echo fine")
    fleet_page.wait_run_state("succeeded")
    assert page.text_content("#failed-count") == "0"
    assert page.is_hidden("#panes")
    assert page.is_visible("#failed-none")
    page.click("#failed-only")
    assert fleet_page.pane_lines() == ["fine"]

    # Cancel ends a running run; its host shows as cancelled.
    fleet_page.run("sleep 30")
    page.wait_for_selector(".pane[data-state='running']")
    assert page.is_enabled("#run-cancel")
    with page.expect_response(lambda r: "/runs/" in r.url and r.request.method == "DELETE") as info:
        page.click("#run-cancel")
    assert info.value.status == 200, info.value.text()
    fleet_page.wait_run_state("cancelled")
    assert pane.locator(".badge").text_content() == "cancelled"
    assert page.is_disabled("#run-cancel")


def posted_run(page, submit) -> tuple[dict, str]:
    """Do ``submit`` (which posts the form); the body sent and the new run's id."""
    with page.expect_response(lambda r: r.url.endswith("/runs") and r.request.method == "POST") as info:
        submit()
    assert info.value.status == 201, info.value.text()
    return info.value.request.post_data_json, info.value.json()["id"]


def test_an_action_with_its_params_and_a_timeout_run_on_the_hosts(fleet_page):
    page = fleet_page.page
    # The actions this caller may run, beside a command.
    page.wait_for_selector("#fleet-what:not([hidden])")
    options = page.eval_on_selector_all("#fleet-action option", "els => els.map(e => [e.value, e.textContent])")
    assert options[0] == ["", "A command"]
    assert sorted(options[1:]) == [["deploy", "Action: deploy"], ["greet", "Action: greet"]]
    assert page.is_hidden("#fleet-params")

    # An action: its parameters take the command box's place; a bad one is said at its field.
    page.select_option("#fleet-action", "greet")
    assert page.is_hidden("#fleet-command") and page.is_visible("#fleet-param-name")
    assert page.text_content("#fleet-action-hint") == "Say hello to someone"
    assert "lower-case name" in page.text_content("#fleet-param-name-hint")
    page.fill("#fleet-param-name", "NOT-lower")
    with page.expect_response(lambda r: r.url.endswith("/runs") and r.request.method == "POST") as info:
        page.press("#fleet-param-name", "Enter")
    assert info.value.status == 400
    page.wait_for_selector("#fleet-param-name-error:not([hidden])")
    assert "must match" in page.text_content("#fleet-param-name-error")
    assert page.get_attribute("#fleet-param-name", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "fleet-param-name"

    # Fixed, with a timeout and the run's options: all of it travels with the run.
    page.fill("#fleet-param-name", "bob")
    page.fill("#fleet-timeout", "20")
    page.fill("#fleet-parallel", "1")
    page.check("#fleet-stop")
    body, _ = posted_run(page, lambda: page.press("#fleet-param-name", "Enter"))
    assert body == {"action": "greet", "params": {"name": "bob"}, "hosts": [HOST], "stop_on_failure": True,
                    "parallel": 1, "timeout": 20}
    fleet_page.wait_run_state("succeeded")
    shot(page, "fleet-action")
    assert fleet_page.pane_lines() == ["hello bob"]
    assert page.text_content("#run-command") == "action greet"
    assert page.is_hidden("#fleet-param-name-error")
    page.fill("#fleet-parallel", "")
    page.fill("#fleet-timeout", "")
    page.uncheck("#fleet-stop")

    # An action that asks to be confirmed: a choice without a default must be made first; then a dialog names
    # what will run where, and Cancel sends nothing.
    page.select_option("#fleet-action", "deploy")
    assert page.is_hidden("#fleet-param-name") and page.is_visible("#fleet-param-env")
    assert page.text_content("#fleet-action-hint") == "(asks to confirm)"
    page.click("#fleet-start")
    page.wait_for_selector("#fleet-error:not([hidden])")
    assert page.text_content("#fleet-error") == "Choose env first."
    page.select_option("#fleet-param-env", "prod")
    page.click("#fleet-start")
    page.wait_for_selector("#confirm-dialog[open]")
    assert page.text_content("#confirm-title") == "Run deploy on 1 host?"
    assert page.text_content("#confirm-params") == "envprod"
    posted = []
    page.on("request", lambda r: posted.append(r) if r.url.endswith("/runs") and r.method == "POST" else None)
    page.click("#confirm-dialog button[value=cancel]")
    page.wait_for_selector("#confirm-dialog:not([open])", state="attached")
    assert posted == []
    page.click("#fleet-start")
    page.wait_for_selector("#confirm-dialog[open]")
    body, _ = posted_run(page, lambda: page.click("#confirm-run"))
    assert body == {"action": "deploy", "params": {"env": "prod"}, "hosts": [HOST], "stop_on_failure": False,
                    "confirm": True}
    fleet_page.wait_run_state("succeeded")
    assert fleet_page.pane_lines() == ["deploying prod"]

    # Back to a command: a timeout the page refuses is said at its field; a short one stops the host's job.
    page.select_option("#fleet-action", "")
    assert page.is_visible("#fleet-command") and page.is_hidden("#fleet-params")
    posted.clear()
    page.fill("#fleet-command", "sleep 30")
    page.fill("#fleet-timeout", "-1")
    page.press("#fleet-command", "Enter")
    page.wait_for_selector("#fleet-error:not([hidden])")
    assert "timeout" in page.text_content("#fleet-error")
    assert page.get_attribute("#fleet-timeout", "aria-invalid") == "true" and posted == []
    page.fill("#fleet-timeout", "1")
    body, _ = posted_run(page, lambda: page.press("#fleet-command", "Enter"))
    assert body == {"command": "sleep 30", "hosts": [HOST], "stop_on_failure": False, "timeout": 1}
    fleet_page.wait_run_state("failed", timeout=10_000)
    badge = fleet_page.pane().locator(".badge")
    assert badge.text_content() == "failed" and "timeout" in badge.get_attribute("title")
    page.fill("#fleet-timeout", "")


def test_recent_runs_are_listed_newest_first_and_each_opens_its_run(fleet_page):
    page = fleet_page.page
    first = fleet_page.run("echo one")
    fleet_page.wait_run_state("succeeded")
    second = fleet_page.run("echo two")
    fleet_page.wait_run_state("succeeded")
    items = page.locator("#run-list .run-item")
    # Loaded as a run starts, and again as it ends: its state is the final one.
    page.wait_for_function(
        "id => { const b = document.querySelector('#run-list .run-item');"
        " return b && b.dataset.run === id && b.querySelector('.badge').textContent === 'succeeded'; }",
        arg=second)
    assert items.nth(1).get_attribute("data-run") == first
    assert [items.nth(n).locator(".run-item-command").text_content() for n in (0, 1)] == ["echo two", "echo one"]
    assert items.nth(0).locator(".run-item-meta").text_content().startswith("1 host · ")
    assert items.nth(0).get_attribute("aria-current") == "true" and items.nth(1).get_attribute("aria-current") is None
    assert page.is_hidden("#runs-empty")
    shot(page, "fleet-recent-runs")
    # An earlier run opens from the list, with its own output.
    items.nth(1).click()
    fleet_page.wait_run_state("succeeded")
    page.wait_for_function("() => document.querySelector('.pane .term-lines .ln')")
    assert fleet_page.pane_lines() == ["one"]
    assert page.url.endswith(f"/fleet#run={first}") and page.text_content("#run-command") == "echo one"
    assert items.nth(1).get_attribute("aria-current") == "true" and items.nth(0).get_attribute("aria-current") is None
    # After a reload, the list is there again (and the open run marked).
    page.reload()
    page.wait_for_selector(f"#run-list .run-item[data-run='{first}'][aria-current='true']")
    assert page.locator("#run-list .run-item").first.get_attribute("data-run") == second


def test_connection_lost_banner_and_resume(fleet_page):
    page = fleet_page.page
    fleet_page.run(emit_command(*[f"out:{hexed(f'tick {n}' + chr(10))}:0.1" for n in range(1, 31)]))
    page.wait_for_selector(".pane .ln:text-is('tick 3')")
    assert page.is_hidden("#conn-banner")
    # The network goes away: every request fails, and the open stream breaks.
    page.route("**/*", lambda route: route.abort())
    page.evaluate("window.sseFleet.stream.source.dispatchEvent(new Event('error'))")
    page.wait_for_selector("#conn-banner:not([hidden])")
    assert "Connection lost." in page.text_content("#conn-banner")
    page.unroute("**/*")
    page.click("#conn-retry")
    page.wait_for_selector("#conn-banner", state="hidden")
    fleet_page.wait_run_state("succeeded")
    # Nothing lost, nothing twice.
    assert fleet_page.pane_lines() == [f"tick {n}" for n in range(1, 31)]


def test_a_pane_keeps_its_last_lines(fleet_page):
    page = fleet_page.page
    fleet_page.run("seq 5000")
    fleet_page.wait_run_state("succeeded")
    lines = fleet_page.pane_lines()
    assert len(lines) == 200 - 1 and lines[-1] == "5000"  # 200 lines: the last 199 numbers and the end note
    assert page.text_content(".pane .term-hidden") == "4,801 earlier lines not shown · download all"
    # All of it is the host's job's output.
    href = page.get_attribute(".pane .term-hidden a", "href")
    assert href.startswith("/jobs/") and href.endswith("/output?download=1"), href
    whole = httpx.get(fleet_page.server.url(href), timeout=10).text
    assert whole == "".join(f"{n}\n" for n in range(1, 5001))
    page.click("#view-toggle")
    page.wait_for_selector("#il-lines .ln")
    assert page.locator("#il-lines .ln").count() == 2000
    assert fleet_page.interleaved_lines()[-2:] == [f"{HOST} │ 5000", f"{HOST} │ [succeeded · exit 0]"]
    assert page.text_content("#il-hidden") == "3,001 earlier lines are not shown here"
    page.click("#view-toggle")
    # Long lines: a pane keeps at most 200,000 characters (50 panes of them stay light).
    fleet_page.run(shlex.join([PYTHON, "-c", "print(('x' * 5000 + chr(10)) * 100, end='')"]))
    fleet_page.wait_run_state("succeeded")
    chars = fleet_page.pane().locator(".term-lines").evaluate("e => e.textContent.length")
    assert 150_000 < chars <= 200_000 + 100, chars


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1400px", "390px"])
def test_fleet_page_has_no_serious_axe_violations(page, server, viewport):
    page.set_viewport_size(viewport)
    load_axe(page)
    view = Fleet(page, server).open()
    view.run(emit_command("out:" + hexed("hello\n"), "err:" + hexed("warning\n")))
    view.wait_run_state("succeeded")
    found = axe_violations(page)
    shot(page, f"a11y-fleet-{viewport['width']}")
    assert not found, summary(found)
    assert page.locator("main:not([hidden]) h1").count() == 1
    if viewport is PHONE:
        small = page.evaluate(TARGETS)
        assert not small, small
    page.click("#view-toggle")
    page.wait_for_selector("#il-lines .ln")
    found = axe_violations(page)
    assert not found, summary(found)


@pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin") is None, reason="nginx is not installed")
def test_three_hosts_picked_by_tag_show_three_panes(page, fleet):  # noqa: F811 - the fixture
    """web-1 serves the page; web-2 fails the command (its FLEET_FAIL is 1), the others succeed."""
    page.set_extra_http_headers({"Authorization": f"Bearer {ADMIN}"})
    page.goto(fleet["web-1"].url("/fleet"))
    page.wait_for_selector("#host-list li >> nth=2")
    assert page.eval_on_selector_all("#host-list li", "els => els.map(e => e.dataset.host).sort()") == [
        "db-1", "web-1", "web-2"]
    page.click(".tag-chip[data-tag='web']")
    page.click(".tag-chip[data-tag='db']")
    assert page.text_content("#fleet-targets").startswith("3 hosts picked")
    code = "import os, sys; print('fail', os.environ['FLEET_FAIL']); sys.exit(int(os.environ['FLEET_FAIL']))"
    page.fill("#fleet-command", shlex.join([PYTHON, "-c", code]))
    page.press("#fleet-command", "Enter")
    wait_run_state(page, "partial", timeout=20_000)
    shot(page, "fleet-three-hosts")
    panes = page.eval_on_selector_all(
        ".pane", "els => els.map(e => [e.dataset.host, e.querySelector('.badge').textContent,"
        " e.querySelector('.pane-exit').textContent, e.querySelector('.term-lines .ln').textContent])")
    assert sorted(panes) == [["db-1", "succeeded", "exit 0", "fail 0"], ["web-1", "succeeded", "exit 0", "fail 0"],
                             ["web-2", "failed", "exit 1", "fail 1"]]
    page.click("#failed-only")
    assert page.eval_on_selector_all(".pane:not([hidden])", "els => els.map(e => e.dataset.host)") == ["web-2"]
    # A role limited to tag db may not target web hosts: the refusal names the host, under the form.
    page.set_extra_http_headers({"Authorization": f"Bearer {DBOPS}"})
    page.click("#pick-none")
    page.click(".tag-chip[data-tag='web']")
    with page.expect_response(lambda r: r.url.endswith("/runs") and r.request.method == "POST") as info:
        page.press("#fleet-command", "Enter")
    assert info.value.status == 403
    page.wait_for_selector("#fleet-error:not([hidden])")
    assert "web-1" in page.text_content("#fleet-error")


def _fifty_host_run(lines: int) -> tuple[dict, dict, str]:
    """A finished run over 50 hosts in the contract's shapes: GET /runs/<id>'s body while it runs, at its end,
    and its whole event stream (every host's lines interleaved; web-7 fails)."""
    names = [f"web-{n}" for n in range(1, 51)]

    def host(name, state, code=None):
        return {"host": name, "job": f"job-{name}", "state": state, "exit_code": code, "reason": None,
                "started_at": None, "ended_at": None}

    events, n = [], 0

    def event(kind, data):
        nonlocal n
        n += 1
        events.append(f"id: r-{n}\nevent: {kind}\ndata: {json.dumps(data)}\n\n")

    for name in names:
        event("host_state", host(name, "running"))
    for k in range(lines):
        for name in names:
            event("stdout", {"host": name, "job": f"job-{name}", "id": k + 1,
                             "data": {"type": "stdout", "out": f"{name} line {k} \x1b[32mok\x1b[0m\n"}})
    final = []
    for name in names:
        code = 1 if name == "web-7" else 0
        event("exit", {"host": name, "job": f"job-{name}", "id": lines + 1, "data": {"type": "exit", "code": code}})
        final.append(host(name, "failed" if code else "succeeded", code))
        event("host_state", final[-1])
    run = {"id": "fifty", "state": "partial", "failed_hosts": ["web-7"], "user": "", "command": "deploy.sh",
           "created_at": 1.0, "ended_at": 5.0, "parallel": None, "stop_on_failure": False, "hosts": final}
    event("run_exit", run)
    running = {**run, "state": "running", "failed_hosts": [], "ended_at": None,
               "hosts": [host(name, "pending") for name in names]}
    return running, run, "retry: 2000\n\n" + "".join(events)


def test_fifty_hosts_stay_usable(page, server):
    """The memory store has one host, so this run's API answers (GET /runs/<id> and its events) are the
    contract's shapes for 50 hosts; the page, its scripts and everything else come from the real server."""
    running, _, body = _fifty_host_run(300)
    page.route("**/runs/fifty", lambda route: route.fulfill(json=running))
    page.route("**/runs/fifty/events*",
               lambda route: route.fulfill(body=body, headers={"Content-Type": "text/event-stream"}))
    page.add_init_script("""
        window.__longest = 0;
        new PerformanceObserver((list) => {
            for (const entry of list.getEntries()) window.__longest = Math.max(window.__longest, entry.duration);
        }).observe({type: 'longtask', buffered: true});
    """)
    page.goto(server.url("/fleet#run=fifty"))
    wait_run_state(page, "partial", timeout=30_000)
    shot(page, "fleet-fifty-hosts")
    assert page.locator(".pane").count() == 50
    assert page.text_content("#run-meta").startswith("50 hosts · 49 succeeded · 1 failed")
    # Each pane keeps its last 200 lines (199 of output and the end note), colours and all.
    assert page.locator(".pane[data-host='web-50'] .term-lines .ln").count() <= 201
    assert page.text_content(".pane[data-host='web-50'] .term-hidden").startswith("101 earlier lines not shown")
    assert page.locator(".pane[data-host='web-50'] .fg-2").first.text_content() == "ok"
    # Bounded DOM: two elements per kept line here (the line and its green span), 50 panes of 201 lines.
    assert page.evaluate("document.getElementsByTagName('*').length") < 50 * 2 * 201 + 2000
    # No task held the page for long (a generous bound: a shared CI machine).
    longest = page.evaluate("window.__longest")
    assert longest < 1000, f"a task took {longest:.0f} ms"
    page.click("#failed-only")
    assert page.eval_on_selector_all(".pane:not([hidden])", "els => els.map(e => e.dataset.host)") == ["web-7"]
    page.click("#view-toggle")
    page.wait_for_selector("#il-lines .ln")
    lines = page.eval_on_selector_all("#il-lines .ln", "els => els.map(e => e.textContent)")
    # The interleaved view keeps the newest lines of all hosts: of web-7's 301, what is among them, and a count.
    assert 0 < len(lines) < 301
    assert page.text_content("#il-hidden") == f"{301 - len(lines)} earlier lines are not shown here"
    assert lines[-2:] == ["web-7  │ web-7 line 299 ok", "web-7  │ [failed · exit 1]"], lines[-2:]
