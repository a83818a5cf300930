"""GET /run?command=...: the seed tutorial's interface, one command streamed on its own request.

The command lives exactly as long as this response: when the client goes
away, its whole process group is killed.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from ...policy.jobspec import InvalidRequest, parse_command_query
from ...server import lifecycle
from ...service import current_service
from ...streaming.delivery import ClientConnection
from ...streaming.response import job_event_stream, watch_for_disconnect
from ..authn import current_principal
from ..errors import ApiError
from ..web import query_text, sse_response

bp = Blueprint("run", __name__)


@bp.get("/run")
def run_command() -> Response:
    """Start a command and stream its events on this response."""
    service = current_service()
    if request.headers.get("Last-Event-ID") is not None:
        # An EventSource reconnecting: the command died with the old connection,
        # and running it again is never what the reconnect meant. 204 stops it.
        return Response(status=204)
    try:
        spec = parse_command_query(query_text("command"), query_text("timeout"), service.settings)
    except InvalidRequest as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    if request.method == "HEAD":
        return sse_response(iter(()))
    job = service.start_job(spec, origin="run", principal=current_principal())
    job_log = service.store.log(job.id)
    job_log.claim_owner()
    client_socket = request.environ.get("gunicorn.socket")
    connection = ClientConnection.from_environ(request.environ)

    def disconnected() -> None:
        job_log.release_owner()
        service.runner.stop(job.id, "disconnected")

    # A parked stream (direct delivery) notices a hang-up itself, and ends the response, which
    # stops the command (closed below); only a stream that cannot park needs a watcher of its own.
    watcher = watch_for_disconnect(client_socket, disconnected) if connection is None else None

    def closed() -> None:
        # However the response ends, even if it never started: the command goes with it.
        if watcher is not None:
            watcher.kill(block=False)
        disconnected()

    stream = job_event_stream(
        service.store, job.id, 0, service.settings, lifecycle.shutdown_event,
        on_progress=job_log.owner_read_through, connection=connection,
    )
    response = sse_response(stream, on_close=[closed])
    response.headers["X-Job-Id"] = job.id
    return response
