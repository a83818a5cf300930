"""GET /healthz: is this worker serving, and how busy is it."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..web import current_service

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness and a few counters; 503 while shutting down, or while the shared store cannot be reached, so
    balancers move on; 200 while merely degraded (the history on disk losing bytes), so they keep the node."""
    health = current_service().health()
    response = jsonify(health)
    response.status_code = 200 if health["status"] in ("ok", "degraded") else 503
    response.headers["Cache-Control"] = "no-store"
    return response
