"""gunicorn settings for SSE Commander (``-c python:app.gunicorn_conf``); the command line overrides them.

Kept free of gevent and Flask imports: this file is read by the master,
which must not import them before workers are forked and patched.
"""

import grp
import os
import pwd
import secrets
import sys

from app.config import ConfigError, load_settings

try:
    _settings = load_settings()
except ConfigError as exc:
    sys.exit(f"sse-commander: configuration error: {exc}")

if os.geteuid() == 0 and _settings.run_as_user not in ("", "root"):
    try:
        pwd.getpwnam(_settings.run_as_user)
        if _settings.run_as_group:
            grp.getgrnam(_settings.run_as_group)
    except KeyError as exc:
        sys.exit(f"sse-commander: configuration error: run_as_user/run_as_group: no such user or group ({exc.args[0]})")

if not os.path.isdir(_settings.child_cwd):
    sys.exit(f"sse-commander: configuration error: child_cwd: {_settings.child_cwd} is not a directory")

if not _settings.session_secret:
    # One secret for every worker of this master (they inherit the environment);
    # sessions and tickets end when the master restarts unless it is configured.
    os.environ["SSECMD_SESSION_SECRET"] = secrets.token_urlsafe(32)

bind = _settings.bind
worker_class = "app.worker.SSEGeventWorker"
workers = _settings.workers
worker_connections = 1000
# For gevent workers this only fires when the event loop is starved; keep the safety net.
timeout = 30
# Streams end by themselves on shutdown; this bounds how long jobs get to die.
graceful_timeout = 10
keepalive = 5
# The largest gunicorn allows: GET /run carries the command in the URL, percent-encoded.
limit_request_line = 8190
control_socket_disable = True
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level


def on_starting(server):
    """Master side, before binding: refuse a public address without auth; decide how jobs are contained."""
    from app import cgroups
    from app.exposure import exposure_problem

    problem = exposure_problem(server.cfg.address, _settings.auth_configured, _settings.insecure_no_auth)
    if problem:
        sys.exit(f"sse-commander: {problem}")
    if _settings.insecure_no_auth and not _settings.auth_configured:
        server.log.warning("INSECURE: insecure_no_auth is set; anyone who can reach %s can run commands",
                           ", ".join(map(str, server.cfg.address)))
    # Once, before any worker is forked: the workers inherit the plan (and, delegated, the leaf cgroup).
    try:
        plan = cgroups.establish(_settings.cgroup, os.getpid())
    except cgroups.CgroupError as exc:
        sys.exit(f"sse-commander: configuration error: {exc}")
    server.log.info("%s", plan.describe())


def child_exit(server, worker):
    """Master side: kill what a worker's jobs left behind (it may have died by SIGKILL)."""
    from app import cgroups
    from app.pgroups import default_run_dir, kill_orphaned_groups

    plan = cgroups.server_plan()
    if plan is not None and plan.uses_cgroups:
        found, removed = cgroups.release_worker(plan, worker.pid)
        if found:
            server.log.warning("worker %s left %d process(es) in its jobs' cgroups; killed", worker.pid, found)
        if not removed:
            server.log.warning("worker %s: some of its jobs' cgroups could not be removed", worker.pid)
        return
    root = _settings.run_dir or default_run_dir()
    killed = kill_orphaned_groups(root, worker.pid)
    if killed:
        server.log.warning("worker %s left %d process group(s); killed: %s", worker.pid, len(killed), killed)


def on_exit(server):
    """Master side, last: remove the cgroups this server made (killing what is still in them)."""
    from app import cgroups

    plan = cgroups.server_plan()
    if plan is not None and not cgroups.release_server(plan):
        server.log.warning("some of this server's cgroups under %s could not be removed", plan.base)
