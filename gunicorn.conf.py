"""gunicorn reads this file from the working directory; the settings live in the package."""

from app.server.gunicorn_conf import *  # noqa: F403
