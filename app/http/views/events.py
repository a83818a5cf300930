"""GET /events?job=<id>&channel=<name>...: many jobs and channels over one SSE connection."""

from __future__ import annotations

from urllib.parse import parse_qs

from flask import Blueprint, Response, request

from ...errors import ApiError
from ...streaming.multiplex import InvalidCursor, parse_composite
from ..authn import current_principal
from ..web import client_wire, current_service, header_text, sse_response, stream_label

bp = Blueprint("events", __name__)


def _names(kind: str) -> list[str]:
    try:
        values = parse_qs(request.query_string.decode("utf-8", errors="strict"), keep_blank_values=True).get(kind, [])
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "the query string is not valid UTF-8") from None
    return list(dict.fromkeys(values))


@bp.get("/events")
def multiplexed() -> Response:
    """Replay and follow every named job and channel; resume all of them with one composite Last-Event-ID."""
    jobs, channels = _names("job"), _names("channel")
    text = header_text("Last-Event-ID")
    query = (_names("last_event_id") or [None])[0]
    if text is None:
        text = query
    elif query:
        try:  # the header wins, but a malformed query is a 400 all the same
            parse_composite(query, len(jobs) + len(channels))
        except InvalidCursor as exc:
            raise ApiError(400, "bad_request", f"last_event_id: {exc}") from None
    stream = current_service().open_multiplexed_stream(
        jobs, channels, current_principal(), text, client_wire(), stream_label()
    )
    if stream is None:
        return Response(status=204)  # every job already delivered to its end: stop reconnecting
    return sse_response(stream)
