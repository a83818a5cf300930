"""GET /openapi.json: the API's contract (app/http/openapi.py), for client generators and API tools."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..openapi import document

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3.1 document; public, like /healthz (it holds nothing about this server's settings)."""
    return jsonify(document())
