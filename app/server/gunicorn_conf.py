"""gunicorn settings for SSE Commander (``-c python:app.server.gunicorn_conf``); the command line overrides them.

Kept free of gevent and Flask imports: this file is read by the master,
which must not import them before workers are forked and patched.
"""

import os
import secrets
import sys

from app.config import CONFIG_ENV, ConfigError, load_settings
from app.process.runas import resolve_job_users
from app.server import metrics_dir
from app.server.capacity import plan_capacity, raise_nofile_limit

try:
    _settings = load_settings()
    _job_users = resolve_job_users(_settings, os.geteuid() == 0)
except (ConfigError, LookupError) as exc:
    sys.exit(f"sse-commander: configuration error: {exc}")

if not os.path.isdir(_settings.child_cwd):
    sys.exit(f"sse-commander: configuration error: child_cwd: {_settings.child_cwd} is not a directory")

if not _settings.session_secret:
    # One secret for every worker of this master (they inherit the environment);
    # sessions and tickets end when the master restarts unless it is configured.
    os.environ["SSECMD_SESSION_SECRET"] = secrets.token_urlsafe(32)

# In the master, before any worker is forked: workers inherit the raised limit.
_nofile_before, _nofile, _nofile_hard = raise_nofile_limit()
_capacity = plan_capacity(_settings, _nofile)

bind = _settings.bind
worker_class = "app.server.worker.SSEGeventWorker"
workers = _settings.workers
# Every stream holds one of these for its life; the headroom above max_streams is for short requests.
worker_connections = _capacity.worker_connections
backlog = _settings.backlog
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
if _settings.log_format == "json":  # issue 19: access and error (app) logs as JSON lines
    logger_class = "app.server.jsonlog.JsonLogger"


def _secret_files(cfg) -> list[tuple[str, str]]:
    """(label, path) of every file that holds secrets or says who ran what."""
    files = [("the configuration file", os.environ.get(CONFIG_ENV, "")), ("the audit log", _settings.audit_log)]
    files += [("gunicorn's access log", cfg.accesslog), ("gunicorn's error log", cfg.errorlog),
              ("the TLS key", cfg.keyfile)]
    return [(label, path) for label, path in files if path and path != "-"]


def on_starting(server):
    """Master side, before forking: refuse a public bind without auth and exposed files; decide job containment."""
    from app.policy.exposure import exposure_problem
    from app.policy.filesafety import shared_user_warnings, startup_problems
    from app.process import cgroups
    from app.process.pgroups import default_run_dir

    problem = exposure_problem(server.cfg.address, _settings.auth_configured, _settings.insecure_no_auth)
    if problem:
        sys.exit(f"sse-commander: {problem}")
    problems = startup_problems(_secret_files(server.cfg), _settings.run_dir or default_run_dir(), _job_users)
    problems += _history_problems(server)
    if problems:
        sys.exit("sse-commander: refusing to start:\n" + "\n".join(f"  - {p}" for p in problems))
    if _settings.insecure_no_auth and not _settings.auth_configured:
        server.log.warning("INSECURE: insecure_no_auth is set; anyone who can reach %s can run commands",
                           ", ".join(map(str, server.cfg.address)))
    if _settings.auth_configured:
        for warning in shared_user_warnings(_job_users, os.geteuid() == 0, _settings.roles):
            server.log.warning(warning)
    # Once, before any worker is forked: the workers inherit the plan (and, delegated, the leaf cgroup).
    try:
        plan = cgroups.establish(_settings.cgroup, os.getpid())
    except cgroups.CgroupError as exc:
        sys.exit(f"sse-commander: configuration error: {exc}")
    server.log.info("%s", plan.describe())
    _log_capacity(server)
    # Before any worker is forked and imports prometheus_client (issue 19: GET /metrics).
    metrics_dir.prepare(_settings.run_dir or default_run_dir(), os.getpid())


def _history_problems(server) -> list[str]:
    """The data directory and its database (history = true): made and checked once, so that a bad one (or a
    full disk) stops the master, not every worker; jobs the last run left running are marked interrupted here
    (issue 17)."""
    if not _settings.history:
        return []
    from app.store.history import database
    from app.store.history.datadir import DATABASE, JOBS_DIR, DataDirError, prepare_data_dir, resolve_data_dir

    try:
        path = prepare_data_dir(resolve_data_dir(_settings.data_dir))
        interrupted = database.open_database(os.path.join(path, DATABASE), os.path.join(path, JOBS_DIR))
    except DataDirError as exc:
        return [str(exc)]
    if interrupted:
        server.log.warning("%d job(s) were running when the server stopped: now interrupted", len(interrupted))
    return []


def _interrupt_jobs_of_dead_workers(server) -> None:
    """History on disk: jobs a dead worker had running become ``interrupted`` (issue 17)."""
    if not _settings.history:
        return
    import sqlite3

    from app.store.history import database
    from app.store.history.datadir import DATABASE, JOBS_DIR, resolve_data_dir

    data_dir = resolve_data_dir(_settings.data_dir)
    try:
        conn = database.connect(os.path.join(data_dir, DATABASE))
        try:
            interrupted = database.interrupt_orphans(conn, os.path.join(data_dir, JOBS_DIR))
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        server.log.warning("could not mark the jobs of a dead worker interrupted: %s", exc)
        return
    if interrupted:
        server.log.warning("%d job(s) of a dead worker are now interrupted: %s", len(interrupted), interrupted)


def _log_capacity(server) -> None:
    raised = f"raised from {_nofile_before} to {_nofile}" if _nofile != _nofile_before else f"{_nofile}"
    server.log.info(
        "open files limit %s (hard limit %s); per worker: %d connections, up to %d streams",
        raised, "unlimited" if _nofile_hard == -1 else _nofile_hard,
        server.cfg.worker_connections, _capacity.max_streams,
    )
    if _capacity.limited_by_nofile:
        server.log.warning(
            "open files limit %d is too low for max_streams %d + connection_headroom %d + %d running jobs' "
            "pipes (%d descriptors per worker): each worker serves at most %d streams and %d connections. "
            "Raise the limit (LimitNOFILE= under systemd, ulimit -Hn in a shell) or lower max_streams.",
            _nofile, _settings.max_streams, _settings.connection_headroom, _settings.max_running_jobs,
            _capacity.fds_needed, _capacity.max_streams, _capacity.worker_connections,
        )


def child_exit(server, worker):
    """Master side: kill what a worker's jobs left behind (it may have died by SIGKILL)."""
    from app.process import cgroups

    if _settings.store_url:
        _jobs_lost(worker.pid)
    from app.process.pgroups import default_run_dir, kill_orphaned_groups

    metrics_dir.worker_gone(worker.pid)
    _interrupt_jobs_of_dead_workers(server)
    plan = cgroups.server_plan()
    if plan is not None and plan.uses_cgroups:
        found, removed = cgroups.release_worker(plan, worker.pid)
        if found:
            server.log.warning("worker %s left %d process(es) in its jobs' cgroups; killed", worker.pid, found)
        if not removed:
            server.log.warning("worker %s: some of its jobs' cgroups could not be removed", worker.pid)
        return
    root = _settings.run_dir or default_run_dir()
    killed = kill_orphaned_groups(root, worker.pid, server.log.warning)
    if killed:
        server.log.warning("worker %s left %d process group(s); killed: %s", worker.pid, len(killed), killed)


_liveness_helpers: list = []


def _jobs_lost(pid: int) -> None:
    """A shared store (issue 16): the dead worker's running jobs are lost at once. In a helper process, which
    the master does not wait for: the master never imports redis (app/store/redis/liveness.py)."""
    import subprocess

    _liveness_helpers[:] = [helper for helper in _liveness_helpers if helper.poll() is None]
    _liveness_helpers.append(subprocess.Popen([sys.executable, "-m", "app.store.redis.liveness", str(pid)]))


def on_exit(server):
    """Master side, last: remove the cgroups this server made (killing what is still in them)."""
    from app.process import cgroups

    metrics_dir.remove()
    plan = cgroups.server_plan()
    if plan is not None and not cgroups.release_server(plan):
        server.log.warning("some of this server's cgroups under %s could not be removed", plan.base)
