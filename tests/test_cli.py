"""The sse-commander console script."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from .server import REPO, VENV_BIN, free_port, wait_healthy


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {"PATH": os.environ["PATH"], **(env or {})}
    return subprocess.run([str(VENV_BIN / "sse-commander"), *args], capture_output=True, text=True, env=full_env)


def _settings_with(**env: str) -> dict:
    result = _run("settings", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_settings_prints_effective_values():
    result = _run("settings", env={"SSECMD_MAX_RUNNING_JOBS": "7"})
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["max_running_jobs"] == 7
    assert settings["bind"] == "127.0.0.1:8000"
    assert settings["store"].startswith("history on disk in ")
    assert _settings_with(SSECMD_HISTORY="false")["store"] == "memory (each worker its own)"


def test_settings_show_the_redis_backend_without_its_password():
    result = _run("settings", env={"SSECMD_STORE_URL": "redis://ops:s3cret@redis.internal:6379/0",
                                   "SSECMD_HOST_NAME": "web-1"})
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["store"] == "redis redis://ops:***@redis.internal:6379/0 (host web-1)"
    assert "s3cret" not in result.stdout


def test_a_store_url_of_another_kind_is_refused_without_traceback():
    result = _run("settings", env={"SSECMD_STORE_URL": "postgres://db/x"})
    assert result.returncode != 0 and "store_url" in result.stderr and "Traceback" not in result.stderr


def test_configuration_errors_are_reported_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("max_running_jobs = 'many'\n")
    result = _run("settings", env={"SSECMD_CONFIG": str(bad)})
    assert result.returncode == 2
    assert "max_running_jobs" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("setting", "value", "complaint"),
    [
        ("SSECMD_HEARTBEAT_INTERVAL", "-1", "configuration error: heartbeat_interval"),
        ("SSECMD_CHILD_CWD", "/nonexistent-dir", "configuration error: child_cwd"),
    ],
)
def test_server_refuses_to_start_on_bad_configuration(setting, value, complaint):
    env = {"PATH": os.environ["PATH"], "SSECMD_DATA_DIR": "/tmp/sse-commander-test-refused", setting: value}
    result = subprocess.run(
        [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0", "wsgi:app"],
        capture_output=True, text=True, env=env, cwd=str(REPO), timeout=30,
    )
    assert result.returncode != 0
    assert complaint in result.stderr


def test_serve_passes_gunicorn_options_through(tmp_path):
    port = free_port()
    env = {"PATH": os.environ["PATH"], "SSECMD_RUN_DIR": str(tmp_path / "run"),
           "SSECMD_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [str(VENV_BIN / "sse-commander"), "serve", "--bind", f"127.0.0.1:{port}", "-w", "1", "--graceful-timeout", "5"],
        env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}/healthz", 30, "sse-commander serve", lambda: "")
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert f"Listening at: http://127.0.0.1:{port}" in output.decode()
