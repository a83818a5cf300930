"""The shipped systemd unit: it agrees with the gunicorn settings it runs, confines the server, and systemd accepts it.

These machines have no systemd as PID 1: the unit is checked statically, and with
`systemd-analyze verify` where that tool runs.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Settings
from app.server import gunicorn_conf
from app.server.capacity import current_nofile, plan_capacity

from .server import REPO

UNIT = REPO / "deploy" / "sse-commander.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def _directives() -> list[str]:
    """Every directive of the unit's [Service] section, in order."""
    names, section = [], None
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            names.append(line.split("=", 1)[0])
    return names


def test_stop_timeout_exceeds_graceful_timeout():
    stop = int(_unit()["Service"]["TimeoutStopSec"])
    assert stop > gunicorn_conf.graceful_timeout


def test_unit_runs_the_repository_config_and_reloads_gracefully():
    service = _unit()["Service"]
    assert re.search(r"gunicorn -c gunicorn\.conf\.py wsgi:app$", service["ExecStart"])
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "control-group"
    assert (REPO / "gunicorn.conf.py").exists() and (REPO / "wsgi.py").exists()


def test_unit_confines_the_root_server():
    service = _unit()["Service"]
    assert set(service["CapabilityBoundingSet"].split()) == {"CAP_SETUID", "CAP_SETGID", "CAP_KILL"}
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "yes"
    assert service["PrivateTmp"] == "yes"
    assert service["Delegate"] == "yes"  # a cgroup per job (app/process/cgroups.py: the delegated mode)
    assert "User" not in service  # root: commands run as run_as_user


def test_readme_explains_every_line_of_the_unit():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### The systemd unit"):]
    section = section[: section.index("\n## ")]
    missing = [name for name in dict.fromkeys(_directives()) if f"`{name}=" not in section]
    assert not missing, missing


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point the unit at this checkout and its virtualenv.
    venv = Path(sys.executable).parent.parent
    text = UNIT.read_text().replace("/opt/sse-commander/.venv", str(venv)).replace("/opt/sse-commander", str(REPO))
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == "", result.stdout + result.stderr  # unknown keys and bad values warn


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
