"""The shipped systemd unit agrees with the gunicorn settings it runs."""

from __future__ import annotations

import configparser
import re

from app import gunicorn_conf
from app.capacity import current_nofile, plan_capacity
from app.config import Settings

from .server import REPO


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(REPO / "deploy" / "sse-commander.service")
    return parser


def test_stop_timeout_exceeds_graceful_timeout():
    stop = int(_unit()["Service"]["TimeoutStopSec"])
    assert stop > gunicorn_conf.graceful_timeout


def test_unit_runs_the_repository_config_and_reloads_gracefully():
    service = _unit()["Service"]
    assert re.search(r"gunicorn -c gunicorn\.conf\.py wsgi:app$", service["ExecStart"])
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "control-group"
    assert (REPO / "gunicorn.conf.py").exists() and (REPO / "wsgi.py").exists()


def test_unit_open_files_limit_carries_the_default_capacity():
    nofile = int(_unit()["Service"]["LimitNOFILE"])
    plan = plan_capacity(Settings(), nofile)
    assert not plan.limited_by_nofile and plan.max_streams == Settings().max_streams >= 10_000


def test_gunicorn_pool_is_sized_from_the_settings():
    settings = Settings()
    plan = plan_capacity(settings, current_nofile())  # importing the config raised this process's limit
    assert gunicorn_conf.worker_connections == plan.worker_connections
    if not plan.limited_by_nofile:
        assert gunicorn_conf.worker_connections == settings.max_streams + settings.connection_headroom
    assert gunicorn_conf.backlog == settings.backlog
