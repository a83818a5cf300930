"""Browser login: a token or password exchanged for a signed, HttpOnly session cookie."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ...policy.ratelimit import retry_after_header
from ...service import current_service
from ..authn import SESSION_COOKIE, current_principal
from ..errors import ApiError
from ..web import json_body

bp = Blueprint("auth", __name__)


def _principal_json(principal) -> dict:
    return {"user": principal.user, "roles": list(principal.roles), "via": principal.via}


@bp.post("/login")
def login() -> Response:
    """{"token": "..."} or {"user": "...", "password": "..."} -> session cookie."""
    service = current_service()
    wait = service.login_limiter.acquire(service.authenticator.client_address())
    if wait:
        raise ApiError(
            429, "rate_limited", "too many login attempts; try again later",
            headers={"Retry-After": retry_after_header(wait)},
        )
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    principal, credential = service.authenticator.login(body)
    service.audit.record("login", user=principal.user, addr=service.authenticator.client_address())
    response = jsonify(_principal_json(principal))
    response.set_cookie(
        SESSION_COOKIE,
        service.signer.session_cookie(principal.user, credential.key),
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
    service = current_service()
    principal = current_principal()
    body = _principal_json(principal)
    body["auth_configured"] = service.settings.auth_configured
    return jsonify(body)
