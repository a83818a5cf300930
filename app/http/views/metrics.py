"""GET /metrics: this host's metrics in the Prometheus text format (app/metrics.py)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..authn import current_principal
from ..web import current_service

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape() -> Response:
    """Every worker's metrics, added up; for the metrics role, or a peer in metrics_allow."""
    body, content_type = current_service().metrics_scrape(current_principal(), request.remote_addr or "")
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response
