"""Channels: publish messages, subscribe over SSE, list channels."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from flask import Blueprint, Response, jsonify, request

from ...policy.access import Principal
from ...policy.jobspec import InvalidRequest, parse_last_event_id
from ...policy.messages import InvalidMessage, check_channel_name, parse_message
from ...policy.ratelimit import retry_after_header
from ...server import lifecycle
from ...service import current_service
from ...store.channels import TooManyChannels
from ...store.eventlog import EventLog
from ...streaming.delivery import ClientConnection
from ...streaming.response import channel_event_stream
from ..authn import current_principal
from ..errors import ApiError
from ..web import body_bytes, header_text, query_text, sse_response

bp = Blueprint("channels", __name__, url_prefix="/channels")


def _check_access(name: str, principal: Principal, may: Callable[[Principal, str], bool], verb: str) -> None:
    """400 for a bad channel name, then 403 unless ``may``: both before the channel can be created."""
    try:
        check_channel_name(name)
    except InvalidMessage as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    if not may(principal, name):
        raise ApiError(403, "forbidden", f"{principal.user or 'anonymous'} may not {verb} {name!r}")


def _channel(name: str) -> EventLog:
    """The channel's log, created on first use: only once the name and the caller's right to it are checked."""
    service = current_service()
    try:
        return service.hub.log(name)
    except TooManyChannels:
        raise ApiError(
            429, "too_many_channels", f"{service.settings.max_channels} channels exist already",
            headers={"Retry-After": "60"},
        ) from None


@bp.get("")
def list_channels() -> Response:
    """Channels the caller may read, with subscriber counts."""
    service = current_service()
    principal = current_principal()
    channels = [c for c in service.hub.describe() if service.policy.may_subscribe(principal, c["name"])]
    return jsonify({"channels": channels})


@bp.post("/<name>/messages")
def publish(name: str) -> Response:
    """Publish JSON {"data": ..., "event": "name"} or a plain text body."""
    service = current_service()
    principal = current_principal()
    _check_access(name, principal, service.policy.may_publish, "publish to")
    wait = service.publish_limiter.acquire(principal.user)
    if wait:
        raise ApiError(
            429, "rate_limited",
            f"{principal.user} published too many messages; try again in {retry_after_header(wait)} s",
            headers={"Retry-After": retry_after_header(wait)},
        )
    _channel(name)
    body = body_bytes()  # 413 for a chunked body beyond MAX_CONTENT_LENGTH, never a truncated prefix
    try:
        message = parse_message(body, request.is_json, service.settings.max_message_bytes)
    except InvalidMessage as exc:
        status = 413 if "larger than" in str(exc) else 400
        raise ApiError(status, "bad_message", str(exc)) from None
    user = principal.user if service.settings.auth_configured else None
    message_id = service.hub.publish(name, message.event, message.data, user)
    response = jsonify({"channel": name, "id": message_id, "event": message.event})
    response.status_code = 201
    return response


@bp.get("/<name>/events")
def subscribe(name: str) -> Response:
    """SSE: replay retained messages after Last-Event-ID (or ?last_event_id=), then follow live."""
    service = current_service()
    principal = current_principal()
    _check_access(name, principal, service.policy.may_subscribe, "subscribe to")
    try:
        cursor = parse_last_event_id(header_text("Last-Event-ID"), query_text("last_event_id"))
    except InvalidRequest as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    existing = service.hub.peek(name)  # a channel that does not exist yet has no messages
    if cursor > (existing.last_id if existing is not None else 0):
        raise ApiError(400, "bad_request", f"Last-Event-ID {cursor} is beyond this channel's last message")
    visible = service.job_visibility(principal) if name == "jobs" else None
    client_socket = request.environ.get("gunicorn.socket")  # to notice a hang-up while nothing is published
    connection = ClientConnection.from_environ(request.environ)

    # Counted from here: the response's close (however the stream ends, even unstarted) uncounts it.
    (subscription,) = service.subscribe(principal, [name])
    stream = channel_event_stream(
        subscription.log, cursor, service.settings, lifecycle.shutdown_event, visible, client_socket, connection
    )
    return sse_response(stream, on_close=[partial(service.hub.unsubscribe, subscription)])
