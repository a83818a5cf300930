"""Jobs cannot read the server's secrets, and nobody can steer the root master: against the real server.

The server runs as root here (as in CI) and commands run as ``nobody``. A
config file made the way an operator makes one (umask 022: 0644) is refused
with the chmod that fixes it; fixed, a job's ``cat`` of it is denied. The
files the server makes itself are private, and ``run_dir`` is its own.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from .auth_support import HTTP, Credentials, bearer, finished, output
from .server import GunicornServer, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as another user only when the server is root")

SECRET = "session-secret-that-jobs-must-not-see-5c1e"


@pytest.fixture
def open_dir():
    """A directory under /tmp that every user may enter (pytest's tmp dirs are 0700): only file modes protect."""
    directory = Path(tempfile.mkdtemp(prefix="ssecmd-secrets-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _config(path: Path, creds: Credentials) -> Path:
    """A config file with a session secret and a token, written as an operator would (default umask)."""
    entry = creds.token_entries[0]
    path.write_text(
        f'session_secret = "{SECRET}"\n'
        f'run_as_user = "nobody"\n\n'
        f'[[tokens]]\nuser = "{entry["user"]}"\nroles = ["operator"]\nhash = "{entry["hash"]}"\n'
    )
    path.chmod(0o644)
    return path


def _server(tmp_path: Path, config: Path, **settings: str) -> GunicornServer:
    # The test servers run commands as root unless told otherwise; here the config file says nobody.
    srv = GunicornServer(tmp_path, {"SSECMD_CONFIG": str(config), **settings})
    del srv.env["SSECMD_RUN_AS_USER"]
    return srv


def _fix(text: str, path: Path) -> list[str]:
    """The command the refusal names for ``path``, as argv."""
    line = next(line for line in text.splitlines() if str(path) in line and "fix with `" in line)
    return shlex.split(line.split("fix with `", 1)[1].rstrip("`"))


def test_a_config_file_others_can_read_is_refused_and_once_fixed_a_job_cannot_read_it(tmp_path, open_dir):
    creds = Credentials()
    token = creds.add_token("olga", ["operator"])
    config = _config(open_dir / "config.toml", creds)
    srv = _server(tmp_path, config)

    text = srv.refused()
    assert "refusing to start" in text and f"the configuration file {config}" in text, text
    assert "can be read by every local user (mode 644)" in text, text
    fix = _fix(text, config)
    assert fix == ["chmod", "600", str(config)]
    subprocess.run(fix, check=True)

    srv.start()
    try:
        job = HTTP.post(srv.url("/jobs"), json={"argv": ["cat", str(config)]}, headers=bearer(token)).json()
        done = finished(srv, token, job["id"])
        text = output(srv, token, job["id"]).decode()
        assert "Permission denied" in text, text
        assert SECRET not in text and "sha256:" not in text
        assert done["exit_code"] == 1
    finally:
        srv.stop()


def test_a_config_file_owned_by_the_run_as_user_is_refused(tmp_path, open_dir):
    creds = Credentials()
    creds.add_token("olga", ["operator"])
    config = _config(open_dir / "config.toml", creds)
    config.chmod(0o600)
    os.chown(config, pwd.getpwnam("nobody").pw_uid, -1)
    text = _server(tmp_path, config).refused()
    assert f"{config} belongs to nobody, a user jobs run as" in text, text
    assert _fix(text, config) == ["chown", "root", str(config)]


def test_the_files_the_server_makes_are_private(tmp_path):
    audit = tmp_path / "logs" / "audit.log"
    audit.parent.mkdir()
    # Process groups (not cgroups): only then does a worker record its jobs' groups under run_dir.
    srv = GunicornServer(tmp_path, {"SSECMD_AUDIT_LOG": str(audit), "SSECMD_CGROUP": "off"})
    assert not srv.run_dir.exists()
    srv.start()
    try:
        # The master made run_dir before forking; the worker made the audit log.
        assert stat.S_IMODE(srv.run_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(audit.stat().st_mode) == 0o600
        job = httpx.post(srv.url("/jobs"), json={"argv": ["sleep", "5"]}, timeout=10).json()
        metrics = srv.run_dir / "metrics"  # the workers' metrics (app/server/metrics_dir.py)
        (worker_dir,) = set(srv.run_dir.iterdir()) - {metrics}
        assert stat.S_IMODE(worker_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(metrics.stat().st_mode) == stat.S_IMODE((metrics / str(srv.pid)).stat().st_mode) == 0o700
        record = worker_dir / str(job["pid"])
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        httpx.delete(srv.url(f"/jobs/{job['id']}"), timeout=10)
    finally:
        srv.stop()


@pytest.mark.parametrize("which", ["audit log", "access log"])
def test_logs_others_can_read_are_refused(tmp_path, which):
    log = tmp_path / "server.log"
    log.write_text("")
    log.chmod(0o644)
    if which == "audit log":
        srv = GunicornServer(tmp_path, {"SSECMD_AUDIT_LOG": str(log)})
        label = "the audit log"
    else:
        srv = GunicornServer(tmp_path)
        srv.args[1:1] = ["--access-logfile", str(log)]
        label = "gunicorn's access log"
    text = srv.refused()
    assert f"{label} {log} can be read by every local user" in text, text
    assert _fix(text, log) == ["chmod", "600", str(log)]


@pytest.mark.parametrize("change", ["owner", "mode"])
def test_a_run_dir_that_is_not_the_servers_alone_is_refused(tmp_path, change):
    srv = GunicornServer(tmp_path)
    srv.run_dir.mkdir(mode=0o700)
    if change == "owner":
        os.chown(srv.run_dir, pwd.getpwnam("nobody").pw_uid, -1)
        expected = f"{srv.run_dir} belongs to nobody"
    else:
        srv.run_dir.chmod(0o777)
        expected = f"fix with `chmod 700 {srv.run_dir}`"
    text = srv.refused()
    assert "run_dir: " in text and expected in text, text


def test_a_record_planted_by_another_uid_kills_nothing_when_a_worker_dies(tmp_path):
    # Process groups (not cgroups): only then does the master act on run_dir's records.
    srv = GunicornServer(tmp_path, {"SSECMD_CGROUP": "off"}).start()
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (worker,) = srv.worker_pids()
        directory = srv.run_dir / str(worker)
        directory.mkdir(mode=0o700, exist_ok=True)
        start_time = Path(f"/proc/{victim.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        record = directory / str(victim.pid)
        record.write_text(start_time)  # exactly what the server writes, but by someone else
        os.chown(record, pwd.getpwnam("nobody").pw_uid, -1)

        os.kill(worker, signal.SIGKILL)
        assert wait_until(lambda: "ignored process-group record" in srv.log(), 10), srv.log()
        assert wait_until(lambda: srv.worker_pids() and worker not in srv.worker_pids(), 10)
        assert victim.poll() is None, "the master killed a process group it did not start"
        assert f"written by uid {pwd.getpwnam('nobody').pw_uid}" in srv.log()
    finally:
        victim.kill()
        victim.wait()
        srv.stop()
