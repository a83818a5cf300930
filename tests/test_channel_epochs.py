"""Channel ids carry an epoch, so a resume survives a restart: against real servers.

Before, after a restart a browser resuming a channel with ``Last-Event-ID: 41`` got a 400 (or, had the new
history reached 41 already, silently the wrong messages), and an EventSource stops for good on a 400.
Now ids are ``<epoch>-<n>``; an id of another epoch (or a bare number) gets a ``reset`` event, the retained
history of the channel as it is now, and then live messages.
"""

from __future__ import annotations

import json

import pytest

from .channel_support import CHANNEL_ID, HTTP, Subscriber, channel_list, epoch, fresh, id_number, publish
from .sse_parser import MessageEvent

# Also on the Redis store (issue 16): the same behaviour, whichever store holds the logs.
pytestmark = pytest.mark.backends("memory", "redis")


def _data(event: MessageEvent) -> object:
    return json.loads(event.data)


def test_channel_ids_are_epoch_and_number_everywhere(server):
    channel = fresh()
    first = publish(server, channel, "a")["id"]
    second = publish(server, channel, "b")["id"]
    assert CHANNEL_ID.fullmatch(first) and epoch(first) == epoch(second)
    assert (id_number(first), id_number(second)) == (1, 2)
    assert channel_list(server)[channel]["last_id"] == second
    with Subscriber(server, f"/channels/{channel}/events") as sub:
        assert sub.connected().status == 200
        assert [e.last_event_id for e in sub.wait_events(2)] == [first, second]
    with Subscriber(server, f"/events?channel={channel}") as sub:
        assert sub.connected().status == 200
        events = sub.wait_events(2)
    assert [e.last_event_id for e in events] == [f"channel:{channel}={first}", f"channel:{channel}={second}"]
    assert [_data(e)["id"] for e in events] == [first, second]


def test_a_resume_after_a_restart_gets_a_reset_the_new_history_then_live(make_server):
    channel = fresh("restart")
    before = make_server()
    for text in ("one", "two", "three"):
        kept = publish(before, channel, text)["id"]  # what a browser's EventSource holds when the server goes
    before.stop()
    after = make_server()
    history = [(publish(after, channel, text)["id"], text) for text in ("four", "five")]
    assert epoch(history[0][0]) != epoch(kept)
    for headers, query in (({"Last-Event-ID": kept}, ""), ({}, f"?last_event_id={kept}")):
        with Subscriber(after, f"/channels/{channel}/events{query}", headers) as sub:
            assert sub.connected().status == 200, bytes(sub.body)
            sub.wait_events(1 + len(history))
            live = publish(after, channel, "live")["id"]
            events = list(sub.wait_events(2 + len(history)))
        reset, *messages = events
        assert (reset.type, _data(reset)) == ("reset", {"missed": "unknown"})
        assert reset.last_event_id == f"{epoch(history[0][0])}-0"  # where the replay of the new history begins
        assert [(e.last_event_id, _data(e)["data"]) for e in messages] == [*history, (live, "live")]
        history.append((live, "live"))


def test_a_bare_number_is_an_id_from_before_epochs_and_gets_a_reset_never_a_400(server):
    channel = fresh()
    ids = [publish(server, channel, n)["id"] for n in range(3)]
    for value in ("41", "2", "3"):  # beyond the channel's end, or within it: a bare number is never trusted
        with Subscriber(server, f"/channels/{channel}/events", {"Last-Event-ID": value}) as sub:
            assert sub.connected().status == 200, bytes(sub.body)
            events = sub.wait_events(4)
        assert [e.type for e in events] == ["reset", "message", "message", "message"]
        assert [e.last_event_id for e in events] == [f"{epoch(ids[0])}-0", *ids]


def test_the_reset_id_resumes_without_another_reset(server):
    channel = fresh()
    with Subscriber(server, f"/channels/{channel}/events", {"Last-Event-ID": "zzzzzz-9"}) as sub:
        assert sub.connected().status == 200
        (reset,) = sub.wait_events(1)
    assert reset.type == "reset"
    # What an EventSource sends on its next reconnect: the reset's id, in the channel's own epoch.
    message = publish(server, channel, "after the reset")["id"]
    with Subscriber(server, f"/channels/{channel}/events", {"Last-Event-ID": reset.last_event_id}) as sub:
        assert sub.connected().status == 200
        (event,) = sub.wait_events(1)
    assert (event.type, event.last_event_id) == ("message", message)


def test_a_composite_cursor_of_another_epoch_resets_only_that_source(server):
    channel, other = fresh(), fresh()
    ids = [publish(server, channel, n)["id"] for n in range(2)]
    other_id = publish(server, other, "kept")["id"]
    composite = f"channel:{channel}=abcdef-1,channel:{other}={other_id}"
    response = HTTP.get(server.url(f"/events?channel={channel}&channel={other}"), headers={"Last-Event-ID": "x"})
    assert response.status_code == 400  # garbage is still garbage
    with Subscriber(server, f"/events?channel={channel}&channel={other}", {"Last-Event-ID": composite}) as sub:
        assert sub.connected().status == 200, bytes(sub.body)
        events = sub.wait_events(3)
    reset, *messages = events
    assert reset.type == "reset" and _data(reset) == {"source": f"channel:{channel}", "missed": "unknown"}
    assert reset.last_event_id == f"channel:{channel}={epoch(ids[0])}-0,channel:{other}={other_id}"
    assert [_data(e)["id"] for e in messages] == ids  # the other source resumed where it was: nothing of it again
