"""Channels: publish messages, subscribe over SSE, list channels."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import lifecycle
from ..access import Principal
from ..authn import current_principal
from ..channels import TooManyChannels
from ..delivery import ClientConnection
from ..errors import ApiError
from ..eventlog import EventLog
from ..jobspec import InvalidRequest, parse_last_event_id
from ..messages import InvalidMessage, check_channel_name, parse_message
from ..ratelimit import retry_after_header
from ..service import current_service
from ..streams import channel_event_stream
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
    # What a message may weigh, body and all: the 413 says it (limit_bytes), so a page can say "80 KB, limit 64 KB".
    limit = min(service.settings.max_message_bytes, service.settings.max_body_bytes)
    too_large = {"limit_bytes": limit}
    try:
        body = body_bytes()  # 413 for a chunked body beyond MAX_CONTENT_LENGTH, never a truncated prefix
    except RequestEntityTooLarge:
        raise ApiError(413, "bad_message", f"message is larger than {limit} bytes", extra=too_large) from None
    try:
        message = parse_message(body, request.is_json, service.settings.max_message_bytes)
    except InvalidMessage as exc:
        large = "larger than" in str(exc)
        raise ApiError(413 if large else 400, "bad_message", str(exc), extra=too_large if large else None) from None
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
