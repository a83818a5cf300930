"""GET /hosts: the hosts that share this store (issue 20), with their tags and liveness."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..authn import current_principal
from ..web import current_service

bp = Blueprint("hosts", __name__)


@bp.get("/hosts")
def list_hosts() -> Response:
    """Every registered host: name, tags, version, running jobs, load, last heartbeat and state."""
    return jsonify({"hosts": current_service().fleet.list_hosts(current_principal())})
