"""The on-disk registry of running process groups, and the master's cleanup from it."""

from __future__ import annotations

import os
import subprocess

from app.pgroups import ProcessGroupRegistry, _start_time, kill_orphaned_groups


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
