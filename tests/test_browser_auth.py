"""Signing in and out of the console and the chat page, in a real headless Chromium, with tokens configured."""

from __future__ import annotations

import json

import httpx
import pytest

from app.policy.access import hash_password, hash_token, new_token

from .browser_support import Console, browser_fixture, context_fixture, page_fixture, shot, wait_for  # noqa: F401
from .server import GunicornServer

ALICE_TOKEN = new_token()
VIEWER_TOKEN = new_token()
ECHO_ONLY_TOKEN = new_token()
BOB_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tokens = [
        {"user": "alice", "roles": ["admin"], "hash": hash_token(ALICE_TOKEN)},
        {"user": "vera", "roles": ["viewer"], "hash": hash_token(VIEWER_TOKEN)},
        {"user": "eddie", "roles": ["echoer"], "hash": hash_token(ECHO_ONLY_TOKEN)},
    ]
    # A role that may run echo and read its own jobs, but not the jobs channel.
    roles = {"echoer": {"commands": ["echo"], "actions": [], "subscribe": ["chat"], "publish": []}}
    users = [{"name": "bob", "roles": ["operator"], "password_hash": hash_password(BOB_PASSWORD)}]
    srv = GunicornServer(
        tmp_path_factory.mktemp("browser-auth"),
        {
            "SSECMD_TOKENS": json.dumps(tokens),
            "SSECMD_USERS": json.dumps(users),
            "SSECMD_ROLES": json.dumps(roles),
            "SSECMD_LOGIN_ATTEMPTS_PER_MINUTE": "0",
            # Streams whose browser left are noticed at the next heartbeat.
            "SSECMD_HEARTBEAT_INTERVAL": "1",
        },
    ).start()
    yield srv
    srv.stop()


def _jobs_subscribers(server) -> int:
    answer = httpx.get(server.url("/channels"), headers={"Authorization": f"Bearer {ALICE_TOKEN}"}, timeout=5)
    return next(c["subscribers"] for c in answer.json()["channels"] if c["name"] == "jobs")


def _login_with_token(page, token: str) -> None:
    page.fill("#login-token", token)
    page.press("#login-token", "Enter")


def test_token_login_run_and_logout(page, server):
    console = Console(page, server).open()
    page.wait_for_selector("#login-view:not([hidden])")
    assert page.is_hidden("#app")
    assert page.get_attribute("#conn", "data-state") == "signedout"
    assert page.evaluate("document.activeElement.id") == "login-token"
    shot(page, "login")

    _login_with_token(page, "ssecmd_wrong")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "wrong credentials" in page.text_content("#login-error")

    _login_with_token(page, ALICE_TOKEN)
    console.wait_live()
    assert page.is_hidden("#login-view")
    assert page.text_content("#who") == "alice"
    console.run("echo signed in")
    console.wait_for_line("signed in")
    console.wait_for_badge("exit 0")
    wait_for(lambda: _jobs_subscribers(server) == 1, message="the page's stream")
    shot(page, "console-signed-in")
    # Who stopped a job: the badge names them, from the server's cancelled_by.
    console.run("sleep 30")
    page.wait_for_function("() => !document.querySelector('#stop').disabled")
    page.click("#stop")
    console.wait_for_badge("cancelled by alice")

    page.click("#logout")
    page.wait_for_selector("#login-view:not([hidden])")
    assert page.is_hidden("#app")
    assert page.get_attribute("#conn", "data-state") == "signedout"
    # The page stopped streaming, and the session is gone.
    wait_for(lambda: _jobs_subscribers(server) == 0, message="the stream to close")
    assert page.evaluate("fetch('/jobs').then(r => r.status)") == 401
    assert page.locator("#term-lines .ln").count() <= 1 and page.locator("#jobs li").count() == 0

    # A reload stays signed out.
    page.reload()
    page.wait_for_selector("#login-view:not([hidden])")


def test_password_login_and_roles(page, server):
    console = Console(page, server).open()
    page.wait_for_selector("#login-view:not([hidden])")
    page.click("#login-mode")
    page.fill("#login-user", "bob")
    page.fill("#login-password", "not it")
    page.press("#login-password", "Enter")
    page.wait_for_selector("#login-error:not([hidden])")
    page.fill("#login-password", BOB_PASSWORD)
    page.press("#login-password", "Enter")
    console.wait_live()
    assert page.text_content("#who") == "bob"
    console.run("echo from bob")
    console.wait_for_line("from bob")

    # The session cookie signs in every tab of this browser profile.
    other = Console(page.context.new_page(), server).open()
    other.wait_live()
    assert other.page.text_content("#who") == "bob"
    assert other.page.is_hidden("#login-view")


def test_viewer_cannot_run(context, server):
    page = context.new_page()
    Console(page, server).open()
    page.wait_for_selector("#login-view:not([hidden])")
    _login_with_token(page, VIEWER_TOKEN)
    page.wait_for_selector("#conn[data-state=live]")
    assert page.is_hidden("#run-form")
    assert page.is_visible("#run-none")


def test_without_the_jobs_channel_the_console_still_runs_jobs(page, server):
    console = Console(page, server).open()
    _login_with_token(page, ECHO_ONLY_TOKEN)
    page.wait_for_selector("#conn[data-state=idle]")  # nothing to watch yet
    console.run("echo on my own")
    console.wait_for_line("on my own")
    console.wait_for_badge("exit 0")
    # The job's stream ends with the job; the page does not hammer the server to reopen it.
    page.wait_for_selector("#conn[data-state=idle]")


def test_chat_shows_who_said_what(browser, server):
    alice_ctx = browser.new_context()
    bob_ctx = browser.new_context()
    try:
        alice = alice_ctx.new_page()
        alice.goto(server.url("/chat?channel=ops"))
        _login_with_token(alice, ALICE_TOKEN)
        alice.wait_for_selector("#conn[data-state=live]")

        bob = bob_ctx.new_page()
        bob.goto(server.url("/chat?channel=ops"))
        bob.click("#login-mode")
        bob.fill("#login-user", "bob")
        bob.fill("#login-password", BOB_PASSWORD)
        bob.press("#login-password", "Enter")
        bob.wait_for_selector("#conn[data-state=live]")

        alice.fill("#message", "deploying now")
        alice.press("#message", "Enter")
        bob.wait_for_selector(".msg:has(.msg-user:text-is('alice')) .msg-text:text-is('deploying now')")
        bob.fill("#message", "ok, watching")
        bob.press("#message", "Enter")
        alice.wait_for_selector(".msg:has(.msg-user:text-is('bob')) .msg-text:text-is('ok, watching')")
        # Your own name is marked as yours.
        assert alice.locator(".msg-user.me").first.text_content() == "alice"
        shot(alice, "chat-signed-in")

        alice.click("#logout")
        alice.wait_for_selector("#login-view:not([hidden])")
        assert alice.locator(".msg").count() == 0
    finally:
        alice_ctx.close()
        bob_ctx.close()
