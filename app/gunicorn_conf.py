"""gunicorn settings for SSE Commander (``-c python:app.gunicorn_conf``); the command line overrides them.

Kept free of gevent and Flask imports: this file is read by the master,
which must not import them before workers are forked and patched.
"""

import sys

from app.config import ConfigError, load_settings

try:
    _settings = load_settings()
except ConfigError as exc:
    sys.exit(f"sse-commander: configuration error: {exc}")

bind = _settings.bind
worker_class = "app.worker.SSEGeventWorker"
workers = _settings.workers
worker_connections = 1000
# For gevent workers this only fires when the event loop is starved; keep the safety net.
timeout = 30
# Streams end by themselves on shutdown; this bounds how long jobs get to die.
graceful_timeout = 10
keepalive = 5
control_socket_disable = True
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level


def child_exit(server, worker):
    """Master side: kill the process groups a worker left behind (it may have died by SIGKILL)."""
    from app.pgroups import default_run_dir, kill_orphaned_groups

    root = _settings.run_dir or default_run_dir()
    killed = kill_orphaned_groups(root, worker.pid)
    if killed:
        server.log.warning("worker %s left %d process group(s); killed: %s", worker.pid, len(killed), killed)
