"""GET /actions: the named actions this caller may run, with their parameters."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ...service import current_service
from ..authn import current_principal

bp = Blueprint("actions", __name__)


@bp.get("/actions")
def list_actions() -> Response:
    """Actions visible to the caller; start one with POST /jobs {"action": NAME, "params": {...}}."""
    service = current_service()
    principal = current_principal()
    actions = [
        action.to_json()
        for name, action in sorted(service.settings.actions.items())
        if service.policy.may_run_action(principal, name)
    ]
    commands = [name for name in service.allowlist.names() if service.policy.may_run_command(principal, name)]
    return jsonify({"actions": actions, "commands": commands})
