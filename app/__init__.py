"""SSE Commander: run commands on a host over HTTP and stream their output as Server-Sent Events."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .config import Settings, load_settings

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)


def _use_gunicorn_logging() -> None:
    """Send the app's log records wherever gunicorn's error log goes, at its level."""
    gunicorn_log = logging.getLogger("gunicorn.error")
    if gunicorn_log.handlers and not log.handlers:
        log.handlers = list(gunicorn_log.handlers)
        log.setLevel(gunicorn_log.level)
        log.propagate = False


def create_app(settings: Settings | None = None) -> Flask:
    """The application factory: settings from the environment unless given."""
    # Flask is imported here, not at module level: gunicorn's master imports
    # this package (for the worker class and hooks) and must stay free of
    # anything that gevent has to patch first.
    from flask import Flask

    settings = settings if settings is not None else load_settings()
    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False

    from .http import admission, authn
    from .http.errors import register_error_handlers
    from .http.views import actions, auth, channels, events, health, hosts, jobs, metrics, pages, run, runs
    from .http.views import openapi as openapi_view
    from .http.web import AUTHENTICATOR_KEY, EXTENSION_KEY
    from .server.bodies import BodyDeadline
    from .service import Service

    _use_gunicorn_logging()
    register_error_handlers(app)
    service = Service(settings)
    authenticator = authn.Authenticator(settings, service.signer)
    app.extensions[EXTENSION_KEY] = service
    app.extensions[AUTHENTICATOR_KEY] = authenticator
    busy = admission.Admission(service.capacity.max_streams, settings.busy_retry_ms, lambda: service.open_streams)
    admission.install(app, busy)  # first: a refused stream costs nothing more
    authn.install(app, authenticator, service.refused)
    for blueprint in (run.bp, jobs.bp, actions.bp, channels.bp, events.bp, auth.bp, health.bp, pages.bp, metrics.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(openapi_view.bp)  # issue 19: GET /openapi.json
    app.register_blueprint(hosts.bp)  # issue 20: fleets
    app.register_blueprint(runs.bp)
    app.wsgi_app = BodyDeadline(app.wsgi_app, settings.body_timeout)  # type: ignore[method-assign]
    log.info(
        "SSE Commander ready: %d allowed commands, %d max running jobs, %d max streams",
        len(service.allowlist.by_name),
        settings.max_running_jobs,
        service.capacity.max_streams,
    )
    return app
