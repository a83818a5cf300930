"""The master's side of the metrics: the directory its workers write their values to (multiprocess mode).

Each master gets ``<run_dir>/metrics/<master pid>``, made empty at start and
named in ``PROMETHEUS_MULTIPROC_DIR`` before any worker is forked (the
workers inherit the environment; prometheus_client reads it when first
imported). Directories of masters that are gone (killed with -9, say) are
removed then too, so several servers may share a run_dir. A worker's live
gauges go with it (``child_exit``); its counters stay until the master
restarts, so that sums never go down.
"""

from __future__ import annotations

import os
import shutil

from app.policy.filesafety import ensure_private_dir
from app.process.cgroups import pid_alive

# prometheus_client's own variable. Not imported from app.metrics: the master must not import prometheus_client
# before the variable is set, or forked workers would inherit its single-process values.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(run_dir: str, master_pid: int) -> str:
    """Make this master's empty metrics directory, remove those of dead masters, and export it."""
    root = os.path.join(run_dir, "metrics")
    ensure_private_dir(run_dir)
    ensure_private_dir(root)
    for name in os.listdir(root):
        if name == str(master_pid) or (name.isdigit() and not pid_alive(int(name))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    path = os.path.join(root, str(master_pid))
    os.mkdir(path, 0o700)
    os.environ[MULTIPROC_ENV] = path
    return path


def worker_gone(pid: int) -> None:
    """A worker exited: its live gauges (running jobs, open streams, subscribers) no longer count."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)


def remove() -> None:
    """The master is exiting: its metrics directory goes with it."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        shutil.rmtree(path, ignore_errors=True)

