"""Browser login: a token or password exchanged for a signed, HttpOnly session cookie."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ...errors import ApiError
from ...policy.ratelimit import retry_after_header
from ..authn import SESSION_COOKIE, current_principal
from ..web import client_address, current_authenticator, current_service, json_body

bp = Blueprint("auth", __name__)


def _principal_json(principal) -> dict:
    return {"user": principal.user, "roles": list(principal.roles), "via": principal.via}


@bp.post("/login")
def login() -> Response:
    """{"token": "..."} or {"user": "...", "password": "..."} -> session cookie."""
    service = current_service()
    addr = client_address()
    wait = service.login_wait(addr)
    if wait:
        raise ApiError(
            429, "rate_limited", "too many login attempts; try again later",
            headers={"Retry-After": retry_after_header(wait)},
        )
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    principal, credential = current_authenticator().login(body)
    response = jsonify(_principal_json(principal))
    response.set_cookie(
        SESSION_COOKIE,
        service.logged_in(principal, credential, addr),
        max_age=int(service.settings.session_ttl),
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/",
    )
    return response


@bp.post("/logout")
def logout() -> Response:
    """Clear the session cookie."""
    response = jsonify({"logged_out": True})
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=request.is_secure)
    return response


@bp.get("/whoami")
def whoami() -> Response:
    """Who the server thinks you are, and whether auth is on."""
    body = _principal_json(current_principal())
    body["auth_configured"] = current_service().settings.auth_configured
    return jsonify(body)
