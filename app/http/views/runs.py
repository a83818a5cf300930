"""Runs (issue 20): one command on many hosts, watched as one SSE stream."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..authn import current_principal
from ..web import (
    client_address,
    client_wire,
    current_service,
    header_text,
    json_body,
    query_text,
    sse_response,
    stream_label,
)

bp = Blueprint("runs", __name__, url_prefix="/runs")


@bp.post("")
def create_run() -> Response:
    """Start a run: {"command" | "argv" | "action" + "params", "hosts" | "tags", "parallel", "stop_on_failure"}."""
    run = current_service().fleet.create_run(json_body(), current_principal(), client_address())
    response = jsonify({"id": run.id, "url": f"/runs/{run.id}", "events": f"/runs/{run.id}/events",
                        "hosts": [h.host for h in run.hosts]})
    response.status_code = 201
    response.headers["Location"] = f"/runs/{run.id}"
    return response


@bp.get("")
def list_runs() -> Response:
    """The newest runs the caller may see, newest first: ?limit= (1-200, default 50)."""
    runs = current_service().fleet.list_runs(current_principal(), query_text("limit"))
    return jsonify({"runs": [run.to_json() for run in runs]})


@bp.get("/<run_id>")
def get_run(run_id: str) -> Response:
    """A run's per-host states and its aggregate."""
    return jsonify(current_service().fleet.get_run(run_id, current_principal()).to_json())


@bp.delete("/<run_id>")
def cancel_run(run_id: str) -> Response:
    """Cancel: no more hosts start; running hosts' jobs are cancelled."""
    run = current_service().fleet.cancel_run(run_id, current_principal(), client_address())
    return jsonify(run.to_json())


@bp.get("/<run_id>/events")
def run_events(run_id: str) -> Response:
    """SSE: every host's job events, host_state changes, then run_exit; resumed with one Last-Event-ID."""
    fleet = current_service().fleet
    run = fleet.get_run(run_id, current_principal())  # 404 before anything about the cursor
    header, query = header_text("Last-Event-ID"), query_text("last_event_id")
    if header is not None and query:
        fleet.cursor_of(run, query)  # the header wins, but a malformed query is a 400 all the same
    stream = fleet.open_run_stream(run, header if header is not None else query, client_wire(), stream_label())
    if stream is None:
        return Response(status=204)  # resumed after run_exit: tells a browser to stop
    return sse_response(stream)
