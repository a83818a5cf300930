"""Channels: publish messages, subscribe over SSE, list channels."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from ...errors import ApiError
from ...policy.messages import InvalidMessage, parse_message
from ..authn import current_principal
from ..web import body_bytes, channel_cursor, client_wire, current_service, sse_response, stream_label

bp = Blueprint("channels", __name__, url_prefix="/channels")


@bp.get("")
def list_channels() -> Response:
    """Channels the caller may read, with subscriber counts."""
    return jsonify({"channels": current_service().visible_channels(current_principal())})


@bp.post("/<name>/messages")
def publish(name: str) -> Response:
    """Publish JSON {"data": ..., "event": "name"} or a plain text body."""
    service = current_service()
    principal = current_principal()
    service.prepare_publish(name, principal)
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
    message_id = service.publish(name, principal, message)
    response = jsonify({"channel": name, "id": message_id, "event": message.event})
    response.status_code = 201
    return response


@bp.get("/<name>/events")
def subscribe(name: str) -> Response:
    """SSE: replay retained messages after Last-Event-ID (or ?last_event_id=), then follow live."""
    service = current_service()
    principal = current_principal()
    service.check_subscribe(name, principal)  # 400 for the name, 403: before anything about the cursor
    cursor = channel_cursor()
    return sse_response(service.open_channel_stream(name, principal, cursor, client_wire(), stream_label()))
