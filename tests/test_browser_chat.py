"""The chat page for everyday use (issue 18, item 10), in a real headless Chromium against the real server.

Without a login, a nickname kept in the browser goes with each message, so people can tell each other apart; a
channel list counts the unread messages of the channels that are not open, also those that came while no chat
page was open; and a message that is too long is answered in the page with its size and the server's limit.
"""

from __future__ import annotations

import httpx
import pytest

from .browser_support import browser_fixture, context_fixture, page_fixture, shot  # noqa: F401 - fixtures
from .server import GunicornServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GunicornServer(tmp_path_factory.mktemp("chat"), {"SSECMD_HEARTBEAT_INTERVAL": "5"}).start()
    yield srv
    srv.stop()


def _open(page, server, channel: str):
    page.goto(server.url(f"/chat?channel={channel}"))
    page.wait_for_selector("#conn[data-state=live]")


def _publish(server, channel: str, text: str) -> None:
    assert httpx.post(server.url(f"/channels/{channel}/messages"), json={"data": text}, timeout=5).status_code == 201


def _unread(page, channel: str) -> str:
    link = page.locator(f".channel-link[data-channel='{channel}'] .unread")
    return link.text_content() if link.count() else ""


def test_nicknames_tell_people_apart(browser, server):
    contexts = [browser.new_context(), browser.new_context()]
    try:
        alice, bob = (ctx.new_page() for ctx in contexts)
        for page in (alice, bob):
            _open(page, server, "nicks")
            assert page.is_visible("#nick")  # no login: a nickname instead
        alice.fill("#nick", "alice")
        bob.fill("#nick", "bob")
        alice.fill("#message", "hello from alice")
        alice.press("#message", "Enter")
        bob.wait_for_selector(".msg:has(.msg-user:text-is('alice')) .msg-text:text-is('hello from alice')")
        bob.fill("#message", "hi alice")
        bob.press("#message", "Enter")
        alice.wait_for_selector(".msg:has(.msg-user:text-is('bob')) .msg-text:text-is('hi alice')")
        # Your own nickname is marked as yours; a nickname is marked as one (nobody signed in).
        assert alice.locator(".msg-user.me").first.text_content() == "alice"
        assert "nick" in (alice.locator(".msg-user:text-is('bob')").get_attribute("class") or "")
        # The nickname is kept in this browser.
        alice.reload()
        alice.wait_for_selector("#conn[data-state=live]")
        assert alice.input_value("#nick") == "alice"
        shot(bob, "chat-nicknames")
    finally:
        for ctx in contexts:
            ctx.close()


def test_channel_list_counts_unread_messages(page, server):
    _publish(server, "room-b", "before anyone looked")
    _open(page, server, "room-a")
    page.wait_for_selector(".channel-link[data-channel='room-b']")
    assert page.get_attribute(".channel-link[data-channel='room-a']", "aria-current") == "page"
    assert _unread(page, "room-b") == ""  # never opened here: counted from now on
    for n in range(3):
        _publish(server, "room-b", f"b{n}")
    page.wait_for_function("() => document.querySelector(\".channel-link[data-channel='room-b'] .unread\")"
                           "?.textContent === '3 unread'")
    # The open channel gets no count.
    _publish(server, "room-a", "here")
    page.wait_for_selector(".msg-text:text-is('here')")
    assert _unread(page, "room-a") == ""
    shot(page, "chat-unread")

    # Reading room-b clears its count; what comes while away is counted when back, even with no page open.
    page.click(".channel-link[data-channel='room-b']")
    page.wait_for_selector(".msg-text:text-is('b2')")
    page.goto("about:blank")
    for n in range(2):
        _publish(server, "room-b", f"later {n}")
    _open(page, server, "room-a")
    page.wait_for_function("() => document.querySelector(\".channel-link[data-channel='room-b'] .unread\")"
                           "?.textContent === '2 unread'")


def test_a_message_too_long_says_so(page, server):
    _open(page, server, "big")
    page.fill("#message", "x" * (80 * 1024))
    page.press("#message", "Enter")
    page.wait_for_selector("#composer-error:not([hidden])")
    assert page.text_content("#composer-error") == "Message too long: 80 KB, limit 64 KB"
    shot(page, "chat-too-long")
