"""GET /actions: the named actions this caller may run, with their parameters."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..authn import current_principal
from ..web import current_service

bp = Blueprint("actions", __name__)


@bp.get("/actions")
def list_actions() -> Response:
    """Actions visible to the caller; start one with POST /jobs {"action": NAME, "params": {...}}."""
    return jsonify(current_service().actions_for(current_principal()))
