"""The jobs API: detached jobs that outlive their viewers, watched and resumed over SSE."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify, request

from ...policy.jobspec import InvalidRequest, parse_job_request, parse_last_event_id
from ...server import lifecycle
from ...service import current_service
from ...states import JobState
from ...streaming.delivery import ClientConnection
from ...streaming.response import job_event_stream, job_output_stream
from ..authn import current_principal
from ..errors import ApiError
from ..web import header_text, json_body, query_text, sse_response

bp = Blueprint("jobs", __name__, url_prefix="/jobs")

_STATES = {state.value for state in JobState}


@bp.post("")
def create_job() -> Response:
    """Start a detached job from {"command": "..."} or {"argv": [...]}, with an optional timeout."""
    service = current_service()
    try:
        spec = parse_job_request(json_body(), service.settings)
    except InvalidRequest as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    job = service.start_job(spec, origin="jobs", principal=current_principal())
    response = jsonify(job.to_json())
    response.status_code = 201
    response.headers["Location"] = f"/jobs/{job.id}"
    return response


@bp.get("")
def list_jobs() -> Response:
    """Every kept job, newest first; ?state= filters."""
    state = query_text("state")
    if state is not None and state not in _STATES:
        raise ApiError(400, "bad_request", f"state must be one of: {', '.join(sorted(_STATES))}")
    jobs = current_service().visible_jobs(current_principal())
    return jsonify({"jobs": [job.to_json() for job in jobs if state is None or job.state.value == state]})


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    """One job's metadata."""
    return jsonify(current_service().get_job(job_id, current_principal()).to_json())


@bp.delete("/<job_id>")
def cancel_job(job_id: str) -> Response:
    """Cancel: SIGTERM to all of the job, SIGKILL after the grace period; 200 once it has ended, else 202 stopping."""
    job = current_service().cancel_job(job_id, current_principal())
    response = jsonify(job.to_json())
    if not job.finished:
        response.status_code = 202
    return response


@bp.post("/<job_id>/tickets")
def create_ticket(job_id: str) -> Response:
    """A short-lived URL that lets anyone holding it read this one job's events and output."""
    service = current_service()
    principal = current_principal()
    if principal.ticket_job is not None:
        raise ApiError(403, "forbidden", "a ticket cannot issue tickets")
    job = service.get_job(job_id, principal)
    ticket, expires_at = service.signer.ticket(job.id, principal.user)
    service.audit.record("ticket", job=job.id, user=principal.user, addr=service.authenticator.client_address())
    response = jsonify(
        {
            "ticket": ticket,
            "job": job.id,
            "expires_at": datetime.fromtimestamp(expires_at, UTC).isoformat(timespec="seconds"),
            "urls": {
                "events": f"/jobs/{job.id}/events?ticket={ticket}",
                "output": f"/jobs/{job.id}/output?ticket={ticket}",
            },
        }
    )
    response.status_code = 201
    return response


@bp.get("/<job_id>/events")
def job_events(job_id: str) -> Response:
    """SSE: replay after Last-Event-ID (or ?last_event_id=), then follow live."""
    service = current_service()
    job = service.get_job(job_id, current_principal())
    try:
        cursor = parse_last_event_id(header_text("Last-Event-ID"), query_text("last_event_id"))
    except InvalidRequest as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    read = service.store.read_after(job.id, cursor)
    if read.finished and not read.events and cursor > 0:
        return Response(status=204)  # resumed after the final event: tells a browser to stop
    if cursor > read.last_id:
        raise ApiError(400, "bad_request", f"Last-Event-ID {cursor} is beyond this job's last event {read.last_id}")
    return sse_response(
        job_event_stream(
            service.store, job.id, cursor, service.settings, lifecycle.shutdown_event,
            connection=ClientConnection.from_environ(request.environ),
        )
    )


@bp.get("/<job_id>/output")
def job_output(job_id: str) -> Response:
    """The combined raw output, byte-exact, streamed while the job runs."""
    service = current_service()
    job = service.get_job(job_id, current_principal())
    stream = job_output_stream(
        service.store, job.id, service.settings, lifecycle.shutdown_event, request.environ.get("gunicorn.socket")
    )
    response = Response(
        # Counted like every stream (max_streams), and dropped if its client stops reading.
        service.tracker.guard(stream, request.environ.get("PATH_INFO", "")),
        mimetype="application/octet-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    response.headers["X-Output-Dropped-Bytes"] = str(job.dropped_bytes)
    disposition = "attachment" if query_text("download") else "inline"
    response.headers["Content-Disposition"] = f'{disposition}; filename="job-{job.id}.log"'
    return response
