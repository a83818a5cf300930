"""GET /run?command=...: the seed tutorial's interface, one command streamed on its own request.

The command lives exactly as long as this response: when the client goes
away, its whole process group is killed.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from ...errors import ApiError
from ...policy.jobspec import InvalidRequest, parse_command_query
from ..authn import current_principal
from ..web import SSE_HEADERS, client_address, client_wire, current_service, query_text, sse_response, stream_label

bp = Blueprint("run", __name__)


@bp.get("/run")
def run_command() -> Response:
    """Start a command and stream its events on this response."""
    service = current_service()
    try:
        spec = parse_command_query(
            query_text("command"), query_text("timeout"), service.settings, query_text("stderr")
        )
    except InvalidRequest as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    if request.headers.get("Last-Event-ID") is not None:
        # An EventSource reconnecting: the command died with the old connection,
        # and running it again is never what the reconnect meant. 204 stops it
        # (after the checks above: a malformed request is a 400 either way).
        return Response(status=204)
    if request.method == "HEAD":
        return Response(mimetype="text/event-stream", headers=SSE_HEADERS)
    job, stream = service.run_command(spec, current_principal(), client_address(), client_wire(), stream_label())
    response = sse_response(stream)
    response.headers["X-Job-Id"] = job.id
    return response
