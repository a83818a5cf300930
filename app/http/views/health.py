"""GET /healthz: is this worker serving, and how busy is it."""

from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify

from ...server import lifecycle
from ...service import current_service

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness and a few counters; 503 while shutting down so balancers move on."""
    service = current_service()
    shutting_down = lifecycle.shutdown_event.is_set()
    response = jsonify(
        {
            "status": "shutting_down" if shutting_down else "ok",
            "worker_pid": os.getpid(),
            "running_jobs": service.store.running_count(),
            "max_running_jobs": service.settings.max_running_jobs,
            "containment": service.containment_plan.public(),
            "open_streams": service.tracker.open_streams,
            "max_streams": service.capacity.max_streams,
            "worker_connections": service.capacity.worker_connections,
            "buffered_bytes": service.budget.used,
            "max_buffered_bytes": service.budget.limit,
        }
    )
    response.status_code = 503 if shutting_down else 200
    response.headers["Cache-Control"] = "no-store"
    return response
