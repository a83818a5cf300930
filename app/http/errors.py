"""JSON error answers for every failure (ApiError, HTTP errors, crashes), so no client sees HTML or a traceback."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from ..errors import ApiError
from ..store.base import NoAnswer, StoreUnavailable

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, headers=None, extra=None):
    """Build the JSON error response."""
    body = {"error": code, "message": message, **(extra or {})}
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _code_for(name: str) -> str:
    return name.lower().replace(" ", "_").replace("'", "")


def _http_code(exc: HTTPException) -> str:
    return _code_for(exc.name or "error")


def register_error_handlers(app: Flask) -> None:
    """Answer ApiError, HTTP errors and unexpected exceptions with JSON."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.extra)

    @app.errorhandler(NoAnswer)
    def _no_answer(exc: NoAnswer):
        return error_response(503, "store_unavailable", str(exc), {"Retry-After": "2"})

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(exc: StoreUnavailable):
        return error_response(503, "store_unavailable", f"the shared store cannot be reached: {exc}",
                              {"Retry-After": "2"})

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        headers = {}
        if exc.code == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(exc.code or 500, _http_code(exc), exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "the server failed to handle this request")

    @app.after_request
    def _json_instead_of_html(response: Response) -> Response:
        """Replace werkzeug's built-in HTML pages that bypass the handlers above.

        Flask answers routing exceptions (``RequestRedirect``: ``/jobs//x`` is
        redirected to ``/jobs/x``) with werkzeug's HTML page, never calling an
        error handler. Status and headers such as Location are kept; only the
        body becomes the usual JSON error object.
        """
        if response.status_code < 300 or response.mimetype != "text/html":
            return response
        status = response.status_code
        name = HTTP_STATUS_CODES.get(status, "error")
        location = response.headers.get("Location")
        message = f"this resource is at {location}" if location else name
        replacement = error_response(status, _code_for(name), message)
        for header, value in response.headers.items():
            if header.lower() not in ("content-type", "content-length", "cache-control"):
                replacement.headers.add(header, value)
        response.close()
        return replacement
