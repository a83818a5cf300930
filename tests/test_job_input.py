"""Input to a running job (issue 18, item 6) on a real server: "stdin": true keeps a pipe open to the command,
POST /jobs/<id>/input writes to it without ever blocking the worker, JSON {"eof": true} closes it.

Who may write, and the audit record (size, not content): tests/test_auth_jobs.py.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from .browser_support import (  # noqa: F401 - fixtures
    Console,
    browser_fixture,
    context_fixture,
    page_fixture,
    shot,
)
from .client_support import client
from .job_support import wait_final
from .server import TEST_ALLOWED, GunicornServer, wait_until
from .sse_client import collect, output_of

ACTIONS = {
    "ask": {"argv": ["head", "-n", "1"], "stdin": True},
    "plain": {"argv": ["cat"]},
}
MAX_INPUT = 65536


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GunicornServer(
        tmp_path_factory.mktemp("input"),
        {
            "SSECMD_ALLOWED_COMMANDS": TEST_ALLOWED + " head sh",
            "SSECMD_ALLOW_STDIN": "true",
            "SSECMD_MAX_INPUT_BYTES": str(MAX_INPUT),
            "SSECMD_MAX_BODY_BYTES": str(2 * MAX_INPUT),
            "SSECMD_ACTIONS": json.dumps(ACTIONS),
        },
    ).start()
    yield srv
    srv.stop()


def _start(server: GunicornServer, body: dict) -> dict:
    response = httpx.post(server.url("/jobs"), json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def _input(server: GunicornServer, job_id: str, data: bytes | None = None, content_type: str = "text/plain"
           ) -> httpx.Response:
    """POST /jobs/<id>/input: ``data`` as the body, or {"eof": true} without it."""
    if data is None:
        return httpx.post(server.url(f"/jobs/{job_id}/input"), json={"eof": True}, timeout=10)
    return httpx.post(server.url(f"/jobs/{job_id}/input"), content=data, headers={"Content-Type": content_type},
                      timeout=10)


def _refused(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    return body


def test_input_reaches_cat_and_eof_ends_it(server):
    job = _start(server, {"argv": ["cat"], "stdin": True})
    assert job["stdin"] is True
    answer = _input(server, job["id"], b"hello\n")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"job": job["id"], "written_bytes": 6, "eof": False}
    binary = bytes(range(256))
    assert _input(server, job["id"], binary, "application/octet-stream").json()["written_bytes"] == 256
    assert _input(server, job["id"]).json() == {"job": job["id"], "written_bytes": 0, "eof": True}
    final = wait_final(server, job["id"], 10)
    assert (final["state"], final["exit_code"]) == ("exited", 0)
    raw = httpx.get(server.url(f"/jobs/{job['id']}/output"), timeout=10).content
    assert raw == b"hello\n" + binary
    # Over: no more input.
    _refused(_input(server, job["id"], b"late\n"), 409, "job_not_running")
    _refused(_input(server, job["id"]), 409, "job_not_running")


def test_an_action_that_opts_in_answers_a_prompt(server):
    job = _start(server, {"action": "ask"})  # the action opts in: its jobs take input
    assert job["stdin"] is True
    assert _input(server, job["id"], b"yes\nand more\n").status_code == 200
    events = collect(server.url(f"/jobs/{job['id']}/events"))
    assert output_of(events) == "yes\n"
    assert json.loads(events[-1].data)["code"] == 0


def test_input_closed_before_eof_or_by_the_command_is_409(server):
    job = _start(server, {"argv": ["sh", "-c", "cat; sleep 30"], "stdin": True})  # runs on after end of file
    assert _input(server, job["id"]).status_code == 200
    _refused(_input(server, job["id"], b"after eof\n"), 409, "input_closed")
    _refused(_input(server, job["id"]), 409, "input_closed")
    httpx.delete(server.url(f"/jobs/{job['id']}"), timeout=10)

    # A command that closes its stdin and goes on running: the write finds no reader.
    closer = _start(server, {"argv": ["sh", "-c", "exec 0<&-; sleep 30"], "stdin": True})
    assert wait_until(lambda: httpx.get(server.url(f"/jobs/{closer['id']}"), timeout=5).json()["pid"], 5)
    time.sleep(0.3)  # the shell has run its exec
    body = _refused(_input(server, closer["id"], b"anyone?\n"), 409, "input_closed")
    assert "no longer reads its input" in body["message"]
    httpx.delete(server.url(f"/jobs/{closer['id']}"), timeout=10)


def test_a_full_pipe_is_409_at_once_never_a_blocked_worker(server):
    job = _start(server, {"argv": ["sleep", "30"], "stdin": True})  # never reads
    chunk = b"x" * MAX_INPUT
    written = 0
    started = time.monotonic()
    for _ in range(64):  # Linux's default pipe holds 64 KiB; the loop stops well before this
        response = _input(server, job["id"], chunk)
        if response.status_code == 409:
            break
        written += response.json()["written_bytes"]
    else:
        pytest.fail("the pipe never filled up")
    body = _refused(response, 409, "input_full")
    assert body["written_bytes"] < len(chunk)
    assert f"{body['written_bytes']} of {len(chunk)} bytes written" in body["message"]
    assert written + body["written_bytes"] <= 1 << 20
    assert time.monotonic() - started < 10
    # The worker is free meanwhile: it answers at once, and the job can still be cancelled.
    assert httpx.get(server.url("/healthz"), timeout=5).status_code == 200
    cancelled = httpx.delete(server.url(f"/jobs/{job['id']}"), timeout=10)
    assert cancelled.json()["state"] == "cancelled"


def test_a_job_without_stdin_refuses_input_and_reads_dev_null(server):
    job = _start(server, {"argv": ["cat"]})
    assert job["stdin"] is False
    final = wait_final(server, job["id"], 10)  # /dev/null: end of file at once
    assert final["exit_code"] == 0
    running = _start(server, {"argv": ["sleep", "30"]})
    body = _refused(_input(server, running["id"], b"hi\n"), 409, "no_stdin")
    assert body["message"] == f'job {running["id"]} was not started with "stdin": true'
    httpx.delete(server.url(f"/jobs/{running['id']}"), timeout=10)


def test_bad_input_requests_are_4xx_with_a_reason(server):
    job = _start(server, {"argv": ["cat"], "stdin": True})
    url = server.url(f"/jobs/{job['id']}/input")
    body = _refused(_input(server, job["id"], b"x" * (MAX_INPUT + 1)), 413, "input_too_large")
    assert body["limit_bytes"] == MAX_INPUT
    _refused(httpx.post(url, content=b"x" * (3 * MAX_INPUT), headers={"Content-Type": "text/plain"}, timeout=10),
             413, "input_too_large")
    _refused(httpx.post(url, content=b"hi", headers={"Content-Type": "image/png"}, timeout=10),
             415, "unsupported_media_type")
    _refused(httpx.post(url, json={"eof": False}, timeout=10), 400, "bad_request")
    _refused(httpx.post(url, json={"text": "hi"}, timeout=10), 400, "bad_request")
    _refused(_input(server, job["id"], b""), 400, "bad_request")
    _refused(_input(server, "0123456789abcdef", b"hi\n"), 404, "job_not_found")
    # Refusing bad input changed nothing: the job still takes good input.
    assert _input(server, job["id"], b"still here\n").json()["written_bytes"] == 11
    assert _input(server, job["id"]).status_code == 200
    assert wait_final(server, job["id"], 10)["exit_code"] == 0
    assert httpx.get(server.url(f"/jobs/{job['id']}/output"), timeout=10).content == b"still here\n"


def test_stdin_must_be_true_or_false(server):
    body = _refused(httpx.post(server.url("/jobs"), json={"argv": ["cat"], "stdin": "yes"}, timeout=10), 400,
                    "bad_request")
    assert body["message"] == "stdin must be true or false"


# The client: run --stdin, attach --stdin.

def test_client_run_stdin_forwards_input_and_end_of_file(server):
    result = client(server, "run", "--stdin", "--", "cat", stdin=b"one\ntwo\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"one\ntwo\n", b"")


def test_client_forwards_more_than_a_pipe_holds_to_a_slow_reader(server):
    data = b"0123456789abcdef\n" * 16384  # 272 KiB: four times what the pipe holds while the command sleeps
    result = client(server, "run", "--stdin", "--", "sh", "-c", "sleep 1; exec cat", stdin=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


def test_client_attach_stdin_answers_a_prompt(server):
    started = client(server, "run", "--stdin", "--detach", "--", "head", "-n", "1")
    job_id = started.stdout.decode().strip()
    result = client(server, "attach", "--stdin", job_id, stdin=b"first\nsecond\n")
    assert (result.returncode, result.stdout) == (0, b"first\n"), result.stderr


# The console: an input line under a job that takes input.

def test_the_console_shows_an_input_line_under_a_job_that_takes_input(page, server):
    console = Console(page, server).open()
    console.wait_live()
    plain = console.run("sleep 30")
    console.wait_job_state(plain, "running")
    assert page.is_hidden("#job-input")  # no stdin: no input line
    httpx.delete(server.url(f"/jobs/{plain}"), timeout=10)

    page.click("details.action >> text=ask")
    with page.expect_response(lambda r: r.url.endswith("/jobs") and r.request.method == "POST") as info:
        page.click("form[data-action=ask] button[type=submit]")
    job_id = info.value.json()["id"]
    page.wait_for_selector("#job-input:not([hidden])")
    shot(page, "console-job-input")
    page.fill("#job-input-text", "the answer")
    with page.expect_response(lambda r: r.url.endswith(f"/jobs/{job_id}/input")) as sent:
        page.press("#job-input-text", "Enter")
    assert sent.value.status == 200
    assert sent.value.request.post_data == "the answer\n"
    console.wait_for_badge("exit 0")
    console.wait_for_line("the answer")
    page.wait_for_selector("#job-input", state="hidden")  # over: no more input

    # End input closes the job's stdin: cat ends.
    cat = httpx.post(server.url("/jobs"), json={"argv": ["cat"], "stdin": True}, timeout=10).json()["id"]
    console.job_item(cat).click()
    page.wait_for_selector("#job-input:not([hidden])")
    page.fill("#job-input-text", "last line")
    page.press("#job-input-text", "Enter")
    console.wait_for_line("last line")
    page.click("#job-input-eof")
    console.wait_for_badge("exit 0")
    page.wait_for_selector("#job-input", state="hidden")

    # A typed command that takes input: "Take input" beside Run (shown where allow_stdin is on).
    toggle = page.locator("#take-input")
    assert toggle.is_visible() and toggle.get_attribute("aria-pressed") == "false"
    toggle.click()
    with page.expect_request(lambda r: r.url.endswith("/jobs") and r.method == "POST") as posted:
        console.run("head -n 1")
    assert posted.value.post_data_json == {"command": "head -n 1", "stdin": True}
    page.wait_for_function("() => document.activeElement.id === 'job-input-text'")  # ready to type
    page.keyboard.type("typed answer")
    page.keyboard.press("Enter")
    console.wait_for_badge("exit 0")
    assert console.output_lines() == ["typed answer"]
