"""GET /, GET /fleet and GET /chat: the browser console, the fleet runs page and the chat page (templates/, static/).

Both pages are public so that the login form can show; everything they do
afterwards goes through the API and its access checks. No inline script or
style anywhere: the Content-Security-Policy forbids both.
"""

from __future__ import annotations

import os

from flask import Blueprint, Response, current_app, render_template, request

from ...policy.messages import InvalidMessage, check_channel_name

bp = Blueprint("pages", __name__)


def _asset_version() -> str:
    """Changes whenever a static file changes, so browsers never run a stale script after an upgrade."""
    folder = current_app.static_folder or ""
    try:
        stamps = [entry.stat().st_mtime_ns for entry in os.scandir(folder) if entry.is_file()]
    except OSError:
        return "0"
    return format(max(stamps, default=0), "x")


def _page(template: str, **context) -> Response:
    response = Response(render_template(template, version=_asset_version(), **context), mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
def index() -> Response:
    """The console: run commands and actions, watch jobs live."""
    return _page("index.html")


@bp.get("/fleet")
def fleet() -> Response:
    """Runs over many hosts: pick hosts, start a run, watch every host's output (a run opens as #run=<id>)."""
    return _page("fleet.html")


@bp.get("/chat")
def chat() -> Response:
    """A channel as a chat room: ?channel=<name> (default "chat")."""
    channel = request.args.get("channel") or "chat"
    try:
        check_channel_name(channel)
        error = None
    except InvalidMessage as exc:
        error = str(exc)
    return _page("chat.html", channel=channel, channel_error=error)
