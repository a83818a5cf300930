"""app/policy/filesafety.py: which files and directories are open to jobs or other users, and what fixes them.

The rules are pure functions of stat results; the I/O part is checked on real
paths (as root here, chown makes files of other users).
"""

from __future__ import annotations

import os
import pwd
import stat

import pytest

from app.config import Settings
from app.policy.filesafety import (
    JobAccounts,
    Node,
    UnsafePath,
    ensure_private_dir,
    foreign_record,
    private_dir_problem,
    secret_dir_problem,
    secret_file_problem,
    secret_file_problems,
    shared_user_warnings,
    startup_problems,
)
from app.process.runas import JobUsers, RunAs

ROOT = 0
NOBODY, NOGROUP = 65534, 65534
JOBS = JobAccounts(frozenset({NOBODY}), frozenset({NOGROUP}))
FILE = stat.S_IFREG
DIR = stat.S_IFDIR


def _file(mode: int, uid: int = ROOT, gid: int = ROOT, path: str = "/etc/ssecmd.toml") -> Node:
    return Node(path, FILE | mode, uid, gid, {ROOT: "root", NOBODY: "nobody"}.get(uid, str(uid)),
                {ROOT: "root", NOGROUP: "nogroup"}.get(gid, str(gid)))


def _dir(mode: int, uid: int = ROOT, gid: int = ROOT, path: str = "/etc") -> Node:
    return Node(path, DIR | mode, uid, gid, "root" if uid == ROOT else "nobody", "root" if gid == ROOT else "nogroup")


# Secret files.


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o660, 0o700])
def test_files_closed_to_jobs_and_others_pass(mode):
    assert secret_file_problem("the configuration file", _file(mode), JOBS, "root") is None


@pytest.mark.parametrize(
    ("mode", "fixed", "why"),
    [
        (0o644, "600", "can be read by every local user"),
        (0o604, "600", "can be read by every local user"),
        (0o666, "600", "can be read by every local user"),
        (0o602, "600", "can be written by every local user"),
        (0o755, "700", "can be read by every local user"),
    ],
)
def test_files_readable_by_others_are_refused_with_the_chmod_that_fixes_them(mode, fixed, why):
    problem = secret_file_problem("the configuration file", _file(mode), JOBS, "root")
    assert problem is not None
    assert problem.startswith(f"the configuration file /etc/ssecmd.toml {why}"), problem
    assert f"(mode {mode:03o})" in problem
    assert problem.endswith(f"fix with `chmod {fixed} /etc/ssecmd.toml`"), problem


def test_a_file_of_the_group_jobs_run_as_must_not_be_group_readable():
    problem = secret_file_problem("the audit log", _file(0o640, gid=NOGROUP, path="/var/log/a"), JOBS, "root")
    assert problem is not None and "group nogroup, which jobs run as" in problem
    assert problem.endswith("`chmod 600 /var/log/a`")
    # The same modes with another group (the admins') are fine.
    assert secret_file_problem("the audit log", _file(0o640, gid=4), JOBS, "root") is None


def test_a_file_owned_by_the_user_jobs_run_as_needs_a_chown():
    problem = secret_file_problem("the configuration file", _file(0o600, uid=NOBODY), JOBS, "root")
    assert problem is not None and "belongs to nobody, a user jobs run as" in problem
    assert problem.endswith("`chown root /etc/ssecmd.toml`")
    both = secret_file_problem("the configuration file", _file(0o644, uid=NOBODY), JOBS, "root")
    assert both.endswith("`chown root /etc/ssecmd.toml && chmod 600 /etc/ssecmd.toml`"), both


def test_without_separate_job_users_only_other_users_matter():
    nobody_jobs = JobAccounts()
    assert secret_file_problem("x", _file(0o640, gid=NOGROUP), nobody_jobs, "alice") is None
    assert secret_file_problem("x", _file(0o644), nobody_jobs, "alice") is not None


# The directories holding them.


@pytest.mark.parametrize("mode", [0o755, 0o700, 0o750, 0o775])
def test_directories_that_jobs_cannot_write_pass(mode):
    assert secret_dir_problem("the configuration file", "/etc/x", _dir(mode), _file(0o600), JOBS, "root") is None


def test_a_directory_others_can_write_is_refused_with_its_chmod():
    problem = secret_dir_problem("the configuration file", "/srv/x", _dir(0o777, path="/srv"), _file(0o600), JOBS,
                                 "root")
    assert problem is not None and "can be written by every local user" in problem
    assert problem.endswith("`chmod 755 /srv`"), problem


def test_a_directory_of_the_jobs_group_or_user_is_refused():
    group = secret_dir_problem("the audit log", "/srv/a", _dir(0o775, gid=NOGROUP, path="/srv"), None, JOBS, "root")
    assert group is not None and "group nogroup, which jobs run as" in group and group.endswith("`chmod 755 /srv`")
    owner = secret_dir_problem("the audit log", "/srv/a", _dir(0o700, uid=NOBODY, path="/srv"), None, JOBS, "root")
    assert owner is not None and owner.endswith("`chown root /srv`")


def test_a_sticky_directory_protects_an_existing_file_but_not_a_missing_one():
    tmp = _dir(0o1777, path="/tmp")
    assert secret_dir_problem("the audit log", "/tmp/a", tmp, _file(0o600, path="/tmp/a"), JOBS, "root") is None
    missing = secret_dir_problem("the audit log", "/tmp/a", tmp, None, JOBS, "root")
    assert missing is not None and "could create the file first" in missing
    planted = secret_dir_problem("the audit log", "/tmp/a", tmp, _file(0o600, uid=NOBODY), JOBS, "root")
    assert planted is not None


# run_dir and its records.


def test_a_private_directory_must_be_a_directory_of_this_user_that_nobody_else_writes():
    assert private_dir_problem(_dir(0o700, path="/run/s"), ROOT, "root") is None
    assert private_dir_problem(_dir(0o755, path="/run/s"), ROOT, "root") is None
    other = private_dir_problem(_dir(0o700, uid=NOBODY, path="/tmp/s"), ROOT, "root")
    assert other is not None and "belongs to nobody" in other and "rm -r /tmp/s" in other
    writable = private_dir_problem(_dir(0o777, path="/tmp/s"), ROOT, "root")
    assert writable is not None and writable.endswith("`chmod 700 /tmp/s`")
    assert private_dir_problem(_dir(0o770, path="/tmp/s"), ROOT, "root") is not None
    link = private_dir_problem(Node("/tmp/s", stat.S_IFLNK | 0o777, ROOT, ROOT), ROOT, "root")
    assert link is not None and "symbolic link" in link


def test_records_not_written_by_this_server_are_foreign():
    record = _file(0o600, path="/run/s/1/42")
    assert foreign_record(record, b"123456", ROOT) is None
    assert foreign_record(record, b"", ROOT) is None  # the leader was gone when recorded
    assert "uid 65534" in foreign_record(_file(0o600, uid=NOBODY), b"123456", ROOT)
    assert foreign_record(record, b"123456\n", ROOT) is not None
    assert foreign_record(record, b"1 2", ROOT) is not None
    assert foreign_record(Node("/run/s/1/42", stat.S_IFIFO | 0o600, ROOT, ROOT), b"", ROOT) is not None


# Who jobs run as.


def test_job_accounts_are_every_run_as_user_but_the_servers_own():
    users = JobUsers(RunAs(NOBODY, NOGROUP), {"deploy": RunAs(1, 1), "boss": None})
    assert JobAccounts.of(users) == JobAccounts(frozenset({NOBODY, 1}), frozenset({NOGROUP, 1}))


def test_commands_running_as_the_server_itself_are_warned_about():
    roles = Settings().roles
    assert shared_user_warnings(JobUsers(RunAs(NOBODY, NOGROUP)), True, roles) == []
    assert len(shared_user_warnings(JobUsers(None), True, roles)) == 1
    by_role = shared_user_warnings(JobUsers(RunAs(NOBODY, NOGROUP), {"boss": None}), True, roles)
    assert len(by_role) == 1 and by_role[0].startswith("role boss's commands run as")
    unprivileged = shared_user_warnings(JobUsers(), False, roles)
    assert len(unprivileged) == 1 and "Start it as root" in unprivileged[0]


# The I/O part, on real paths.

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="makes files of other users with chown")


@needs_root
def test_real_files_are_judged_by_their_modes_and_directories(tmp_path):
    nobody = pwd.getpwnam("nobody")
    jobs = JobAccounts(frozenset({nobody.pw_uid}), frozenset({nobody.pw_gid}))
    config = tmp_path / "config.toml"
    config.write_text("session_secret = 'x'\n")
    config.chmod(0o644)
    (problem,) = secret_file_problems("the configuration file", str(config), jobs)
    assert problem.endswith(f"`chmod 600 {config}`")
    config.chmod(0o600)
    assert secret_file_problems("the configuration file", str(config), jobs) == []
    # Through a symlink: the file it names, and both directories.
    elsewhere = tmp_path / "open"
    elsewhere.mkdir()
    elsewhere.chmod(0o777)
    link = elsewhere / "link.toml"
    link.symlink_to(config)
    (problem,) = secret_file_problems("the configuration file", str(link), jobs)
    assert f"the directory {elsewhere} of" in problem and f"`chmod 755 {elsewhere}`" in problem
    # Missing files are made by the server; /dev/null holds nothing.
    assert secret_file_problems("the audit log", str(tmp_path / "absent.log"), jobs) == []
    assert secret_file_problems("the audit log", "/dev/null", jobs) == []


@needs_root
def test_ensure_private_dir_creates_0700_and_refuses_another_users(tmp_path):
    run_dir = tmp_path / "parent" / "run"
    ensure_private_dir(str(run_dir))
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    ensure_private_dir(str(run_dir))  # twice is fine
    os.chown(run_dir, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(UnsafePath, match="belongs to nobody"):
        ensure_private_dir(str(run_dir))
    os.chown(run_dir, 0, -1)
    run_dir.chmod(0o777)
    with pytest.raises(UnsafePath, match="chmod 700"):
        ensure_private_dir(str(run_dir))
    run_dir.rmdir()
    run_dir.symlink_to(tmp_path)
    with pytest.raises(UnsafePath, match="symbolic link"):
        ensure_private_dir(str(run_dir))


@needs_root
def test_startup_problems_lists_every_file_and_the_run_dir(tmp_path):
    nobody = pwd.getpwnam("nobody")
    users = JobUsers(RunAs(nobody.pw_uid, nobody.pw_gid))
    config, audit = tmp_path / "config.toml", tmp_path / "audit.log"
    config.write_text("")
    audit.write_text("")
    config.chmod(0o644)
    os.chown(audit, nobody.pw_uid, -1)
    audit.chmod(0o600)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    run_dir.chmod(0o733)
    problems = startup_problems([("the configuration file", str(config)), ("the audit log", str(audit))],
                                str(run_dir), users)
    assert len(problems) == 3, problems
    assert f"chmod 600 {config}" in problems[0]
    assert f"chown root {audit}" in problems[1]
    assert problems[2].startswith(f"run_dir: {run_dir} can be written by other users")
