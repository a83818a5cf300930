"""The jobs API: detached jobs that outlive their viewers, watched and resumed over SSE."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from ...errors import ApiError
from ...policy.jobspec import InvalidRequest, parse_job_request, parse_last_event_id
from ..authn import current_principal
from ..web import (
    body_bytes,
    client_address,
    client_wire,
    current_service,
    header_text,
    json_body,
    logged_stream,
    query_text,
    sse_response,
    stream_label,
)

bp = Blueprint("jobs", __name__, url_prefix="/jobs")


@bp.post("")
def create_job() -> Response:
    """Start a detached job from {"command": "..."} or {"argv": [...]}, with an optional timeout."""
    service = current_service()
    try:
        spec = parse_job_request(json_body(), service.settings)
    except InvalidRequest as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    job = service.start_job(spec, current_principal(), client_address())
    response = jsonify(job.to_json())
    response.status_code = 201
    response.headers["Location"] = f"/jobs/{job.id}"
    return response


@bp.get("")
def list_jobs() -> Response:
    """Kept jobs, newest first: filters, a cursor to page on, and counts by state (app/store/query.py)."""
    service = current_service()
    args = {name: text for name in service.JOB_QUERY_PARAMETERS if (text := query_text(name)) is not None}
    page = service.find_jobs(current_principal(), args)
    return jsonify({"jobs": [job.to_json() for job in page.jobs], "next": page.next, "counts": page.counts})


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    """One job's metadata."""
    return jsonify(current_service().get_job(job_id, current_principal()).to_json())


@bp.delete("/<job_id>")
def cancel_job(job_id: str) -> Response:
    """Cancel: SIGTERM to all of the job, SIGKILL after the grace period; 200 once it has ended, else 202 stopping."""
    job = current_service().cancel_job(job_id, current_principal(), client_address())
    response = jsonify(job.to_json())
    if not job.finished:
        response.status_code = 202
    return response


_INPUT_TYPES = ("text/plain", "application/octet-stream")


@bp.post("/<job_id>/input")
def job_input(job_id: str) -> Response:
    """Write the body (text/plain or application/octet-stream) to the job's stdin; JSON {"eof": true} closes it."""
    service = current_service()
    principal = current_principal()
    service.get_job(job_id, principal)  # 404 before anything about the body
    if request.is_json:
        if json_body() != {"eof": True}:
            raise ApiError(400, "bad_request", 'a JSON body closes the input: {"eof": true}')
        data = None
    elif request.mimetype in _INPUT_TYPES:
        limit = min(service.settings.max_input_bytes, service.settings.max_body_bytes)
        too_large = ApiError(
            413, "input_too_large", f"input is larger than {limit} bytes", extra={"limit_bytes": limit}
        )
        try:
            data = body_bytes()  # 413 for a chunked body beyond MAX_CONTENT_LENGTH, never a truncated prefix
        except RequestEntityTooLarge:
            raise too_large from None
        if len(data) > limit:
            raise too_large
        if not data:
            raise ApiError(400, "bad_request", 'send the input as the body, or JSON {"eof": true} to close it')
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            'send input as text/plain or application/octet-stream, or JSON {"eof": true} to close it',
        )
    return jsonify(service.write_input(job_id, principal, client_address(), data))


@bp.post("/<job_id>/tickets")
def create_ticket(job_id: str) -> Response:
    """A short-lived URL that lets anyone holding it read this one job's events and output."""
    response = jsonify(current_service().create_ticket(job_id, current_principal(), client_address()))
    response.status_code = 201
    return response


@bp.get("/<job_id>/events")
def job_events(job_id: str) -> Response:
    """SSE: replay after Last-Event-ID (or ?last_event_id=), then follow live."""
    service = current_service()
    principal = current_principal()
    service.get_job(job_id, principal)  # 404 before anything about the request's cursor
    try:
        cursor = parse_last_event_id(header_text("Last-Event-ID"), query_text("last_event_id"))
    except InvalidRequest as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    stream = service.open_job_stream(job_id, principal, cursor, client_wire(), stream_label())
    if stream is None:
        return Response(status=204)  # resumed after the final event: tells a browser to stop
    return sse_response(stream)


def output_file_name(job_id: str, missing: int) -> str:
    """The download's file name: ``job-<id>.log``, or ``job-<id>-missing-15.1MiB.log`` when bytes were dropped."""
    if not missing:
        return f"job-{job_id}.log"
    size, unit = float(missing), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    amount = f"{missing}B" if unit == "B" else f"{size:.1f}{unit}"
    return f"job-{job_id}-missing-{amount}.log"


@bp.get("/<job_id>/output")
def job_output(job_id: str) -> Response:
    """The combined raw output, byte-exact, streamed while the job runs; its name says how much is missing."""
    job, missing, stream = current_service().open_output(
        job_id, current_principal(), client_wire().sock, stream_label()
    )
    response = Response(
        # Counted like every stream (max_streams), and dropped if its client stops reading.
        logged_stream(stream),
        mimetype="application/octet-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    response.headers["X-Output-Dropped-Bytes"] = str(missing)
    disposition = "attachment" if query_text("download") else "inline"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{output_file_name(job.id, missing)}"'
    return response
