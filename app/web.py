"""Request parsing and response building shared by the views."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from flask import Response, request

from .errors import ApiError

SSE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}


def sse_response(stream: Iterator[bytes]) -> Response:
    """A streaming text/event-stream response with the headers proxies and browsers need."""
    return Response(stream, mimetype="text/event-stream", headers=SSE_HEADERS)


def query_text(name: str) -> str | None:
    """A query parameter decoded as strict UTF-8; 400 for bad bytes or a repeated name."""
    values = parse_qs(request.query_string, keep_blank_values=True).get(name.encode())
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, "bad_request", f"query parameter {name!r} given more than once")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", f"query parameter {name!r} is not valid UTF-8") from None


def header_text(name: str) -> str | None:
    """A request header as text; 400 if it holds bytes outside ASCII."""
    value = request.headers.get(name)
    if value is not None and not value.isascii():
        raise ApiError(400, "bad_request", f"header {name} must be ASCII")
    return value


def json_body() -> Any:
    """The request body as JSON; 415 without a JSON content type, 400 if it does not parse."""
    if not request.is_json:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send a JSON body with Content-Type: application/json (curl --json '...')",
        )
    data = request.get_data(cache=False)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_json", "body is not valid UTF-8") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ApiError(400, "bad_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "bad_json", "body is nested too deeply") from None
