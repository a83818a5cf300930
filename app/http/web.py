"""Request parsing and response building shared by the views, and how a view finds its Service."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from flask import Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import ApiError
from ..logs import STREAM_ENV
from ..store.base import START, Position, parse_position
from ..streaming.tracker import TrackedStream
from ..streaming.wire import Wire

if TYPE_CHECKING:
    from ..service import Service
    from .authn import Authenticator

EXTENSION_KEY = "sse_commander"  # app.extensions: the Service
AUTHENTICATOR_KEY = "sse_commander.authenticator"  # app.extensions: the Authenticator (authn.py)
SSE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}


def current_service() -> Service:
    """The Service of the app handling this request."""
    return current_app.extensions[EXTENSION_KEY]


def current_authenticator() -> Authenticator:
    """The Authenticator of the app handling this request."""
    return current_app.extensions[AUTHENTICATOR_KEY]


def client_address() -> str:
    """Where the current request comes from: the peer, or the client a trusted proxy forwards for."""
    return current_authenticator().client_address()


def stream_label() -> str:
    """The request path, for a stream's log lines: the environ's own string (request.path would copy it,
    and a stream keeps its label as long as it is open)."""
    return request.environ.get("PATH_INFO", "")


def client_wire() -> Wire:
    """The client's connection, for the stream this request opens (hang-up watch, direct delivery)."""
    return Wire.from_environ(request.environ)


def sse_response(stream: TrackedStream) -> Response:
    """A streaming text/event-stream response with the headers proxies and browsers need.

    The stream is counted, and dropped if its client stops reading (see
    tracker.StreamTracker); it runs its ``on_close`` callbacks however the
    response ends.
    """
    # The stream never reads the request again; without this, werkzeug's parsed request
    # (headers, query, cookies) would stay in the environ for the life of the connection.
    request.environ.pop("werkzeug.request", None)
    logged_stream(stream)
    # direct_passthrough: gunicorn iterates the tracked stream itself, without werkzeug's
    # two wrapper levels (see TrackedStream); the frames are bytes already.
    return Response(stream, mimetype="text/event-stream", headers=SSE_HEADERS, direct_passthrough=True)


def logged_stream(stream: TrackedStream) -> TrackedStream:
    """Let the access log say how this request's stream ended, and how much it sent (app/logs.py)."""
    request.environ[STREAM_ENV] = stream
    return stream


def channel_cursor() -> Position:
    """A channel stream's resume position: the Last-Event-ID header (wins) or ?last_event_id=; 400 if unreadable.

    Empty (or absent, or 0) is the start. ``<epoch>-<n>`` is this server's form; a bare number is an id from
    before channel ids had epochs, which the stream answers with a ``reset``.
    """
    from_query = _channel_position(query_text("last_event_id"))  # checked even when the header wins
    header = header_text("Last-Event-ID")
    return _channel_position(header) if header is not None else from_query


def _channel_position(value: str | None) -> Position:
    value = (value or "").strip()
    if not value:
        return START
    try:
        return parse_position(value)
    except ValueError:
        raise ApiError(400, "bad_request", "Last-Event-ID must be a channel event id: <epoch>-<n>") from None


def _query_values(name: str) -> list[bytes]:
    """Every raw (percent-decoded, not yet text-decoded) value of ``name`` in the query string.

    Works on bytes end to end: ``urllib.parse.parse_qs`` given bytes decodes
    ``%FF`` to U+FFFD and then fails to re-encode it as ASCII (a 500).
    """
    wanted = name.encode()
    values = []
    for field in request.query_string.split(b"&"):
        if not field:
            continue
        key, _, value = field.partition(b"=")
        if unquote_to_bytes(key.replace(b"+", b" ")) == wanted:
            values.append(unquote_to_bytes(value.replace(b"+", b" ")))
    return values


def query_text(name: str) -> str | None:
    """A query parameter decoded as strict UTF-8; 400 for bad bytes or a repeated name."""
    values = _query_values(name)
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


def body_bytes() -> bytes:
    """The whole body, never more than MAX_CONTENT_LENGTH: 413 beyond it, even when sent chunked.

    Werkzeug checks a declared Content-Length itself, but a chunked body is only
    capped: its stream stops at the limit without an error, so the JSON parser
    would see a silently truncated prefix. One more byte from the server's own
    (terminated) stream tells whether anything was cut off.
    """
    data = request.get_data(cache=False)
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(data) >= limit:
        raw = request.environ.get("wsgi.input")
        if raw is not None and raw.read(1):
            raise RequestEntityTooLarge()
    return data


def _reject_constant(name: str) -> Any:
    raise ApiError(400, "bad_json", f"body is not valid JSON: {name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object hook refusing repeated keys, which parsers disagree on (first wins or last wins)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ApiError(400, "bad_json", f"body repeats the key {key!r}")
        obj[key] = value
    return obj


def _check_text(value: Any) -> None:
    """400 if any string or key in a parsed JSON value holds an unpaired surrogate (\\ud800 and the like).

    Such strings are not Unicode text: they cannot be encoded for argv and
    would otherwise fail deep inside the runner. Iterative, so any depth the
    parser accepted is fine here.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts: Any = (item,)
        elif isinstance(item, dict):
            texts = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(400, "bad_json", "body holds an unpaired UTF-16 surrogate escape") from None


def json_body() -> Any:
    """The request body as strict JSON.

    415 without a JSON content type, 413 when too large, 400 if it is not
    UTF-8, does not parse, nests too deeply, uses NaN/Infinity, repeats a key
    or holds unpaired surrogates.
    """
    if not request.is_json:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send a JSON body with Content-Type: application/json (curl --json '...')",
        )
    data = body_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_json", "body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except ValueError as exc:
        raise ApiError(400, "bad_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "bad_json", "body is nested too deeply") from None
    _check_text(value)
    return value
