"""The on-disk registry of running process groups, and the master's cleanup from it."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app.process.pgroups import ProcessGroupRegistry, _start_time, kill_orphaned_groups


def test_add_records_the_start_time_and_remove_forgets(tmp_path):
    registry = ProcessGroupRegistry(str(tmp_path / "run"), 4242)
    registry.add(os.getpid())
    entry = tmp_path / "run" / "4242" / str(os.getpid())
    assert entry.read_text() == _start_time(os.getpid()) and entry.read_text().isdigit()
    assert entry.stat().st_mode & 0o077 == 0
    registry.remove(os.getpid())
    assert not entry.exists()
    registry.remove(os.getpid())  # twice is fine


def test_a_gone_process_is_recorded_without_a_start_time(tmp_path):
    proc = subprocess.Popen(["true"])
    proc.wait()
    registry = ProcessGroupRegistry(str(tmp_path), 1)
    registry.add(proc.pid)
    assert (tmp_path / "1" / str(proc.pid)).read_text() == ""
    assert _start_time(proc.pid) is None


def test_kill_orphaned_groups_kills_what_a_dead_worker_left(tmp_path):
    leader = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        registry = ProcessGroupRegistry(str(tmp_path), 99)
        registry.add(leader.pid)
        assert kill_orphaned_groups(str(tmp_path), 99) == [leader.pid]
        assert leader.wait(timeout=5) == -9
        assert not (tmp_path / "99").exists()
    finally:
        if leader.poll() is None:
            leader.kill()


def test_the_registry_makes_its_directories_0700(tmp_path):
    registry = ProcessGroupRegistry(str(tmp_path / "base" / "run"), 7)
    registry.add(os.getpid())
    assert stat.S_IMODE((tmp_path / "base" / "run").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "base" / "run" / "7").stat().st_mode) == 0o700
    registry.remove(os.getpid())


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="plants records of another user with chown")


@pytest.fixture
def victim():
    """A live process group that is not ours to kill."""
    leader = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield leader
    if leader.poll() is None:
        leader.kill()
        leader.wait()


def _plant(run_dir: Path, worker: int, pgid: int, content: str) -> Path:
    directory = run_dir / str(worker)
    directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    run_dir.chmod(0o700)
    record = directory / str(pgid)
    record.write_text(content)
    record.chmod(0o600)
    return record


@needs_root
def test_a_record_planted_by_another_uid_kills_nothing(tmp_path, victim):
    record = _plant(tmp_path / "run", 99, victim.pid, _start_time(victim.pid))  # exactly what the server writes
    os.chown(record, pwd.getpwnam("nobody").pw_uid, -1)
    warnings: list[str] = []
    assert kill_orphaned_groups(str(tmp_path / "run"), 99, warnings.append) == []
    assert victim.poll() is None
    assert any("written by uid" in w and str(record) in w for w in warnings), warnings


@pytest.fixture
def leaderless():
    """A live process group whose leader has exited and been reaped: no start time left to compare with."""
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!"], start_new_session=True, stdout=subprocess.PIPE,
                              text=True)
    member = int(leader.stdout.readline())
    leader.wait()
    leader.stdout.close()
    yield leader.pid, member
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGKILL)


@pytest.mark.parametrize("content", ["123 ; kill", "not a start time", "\n\n"])
def test_a_record_not_in_the_servers_form_kills_nothing(tmp_path, leaderless, content):
    pgid, member = leaderless
    assert _start_time(pgid) is None and _start_time(member) is not None  # the premise
    _plant(tmp_path / "run", 99, pgid, content)
    assert kill_orphaned_groups(str(tmp_path / "run"), 99) == []
    assert _start_time(member) is not None


@needs_root
@pytest.mark.parametrize("change", ["owner", "mode"])
def test_records_in_a_run_dir_others_can_write_kill_nothing(tmp_path, victim, change):
    run_dir = tmp_path / "run"
    _plant(run_dir, 99, victim.pid, _start_time(victim.pid))
    if change == "owner":
        os.chown(run_dir / "99", pwd.getpwnam("nobody").pw_uid, -1)
    else:
        run_dir.chmod(0o777)
    warnings: list[str] = []
    assert kill_orphaned_groups(str(run_dir), 99, warnings.append) == []
    assert victim.poll() is None
    assert warnings and "ignored" in warnings[0], warnings


def test_never_the_masters_own_group(tmp_path):
    # In a process of its own group: on failure, that process dies, not pytest.
    code = (
        "import os, sys; from app.process.pgroups import ProcessGroupRegistry, kill_orphaned_groups; "
        "ProcessGroupRegistry(sys.argv[1], 99).add(os.getpgrp()); "
        "print(kill_orphaned_groups(sys.argv[1], 99), flush=True)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                            timeout=30, start_new_session=True, cwd=Path(__file__).resolve().parent.parent)
    assert (result.returncode, result.stdout) == (0, "[]\n"), result
