"""The shipped systemd unit agrees with the gunicorn settings it runs."""

from __future__ import annotations

import configparser
import re

from app import gunicorn_conf

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
