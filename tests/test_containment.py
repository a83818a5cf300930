"""Containment of what runs, against the real server: the unprivileged user, rlimits, cwd, environment.

The server runs as root here (and in CI), so commands run as ``nobody`` unless a
test opts out. Files under /root, pytest's tmp dirs and possibly the checkout are
not readable by nobody: the scripts nobody runs are written to a world-readable
directory under /tmp, and run with Debian's /usr/bin/python3 (not the venv's).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from .auth_support import HTTP, Credentials, bearer, finished, output, start, wait_for_audit
from .server import GunicornServer, group_members, process_state, wait_until
from .sse_client import collect, iter_events, open_stream, output_of, payload

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, readable by nobody; the venv's may live under /root

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containment applies only when the server runs as root"),
    pytest.mark.skipif(
        not os.access(SYSTEM_PYTHON, os.X_OK), reason=f"{SYSTEM_PYTHON} missing; `make test-system-deps` installs it"
    ),
]

ALLOWED = f"id echo sleep env {SYSTEM_PYTHON}"
SECRET_NAME = "CONTAINMENT_TEST_SECRET"
SECRET_VALUE = "s3cret-value-8d1f0c7e"
NPROC = 30
NOFILE = 64
AS_BYTES = 256 * 1024 * 1024

SCRIPTS = {
    # A fork bomb that bounds itself (attempts, failures, wall time) in case the limit is missing;
    # children just sleep until the job is cancelled.
    "forkbomb.py": """\
import errno, os, time
forked = failed = 0
error = None
deadline = time.monotonic() + 10
for _ in range(1000):
    if time.monotonic() > deadline or failed >= 200:
        break
    try:
        pid = os.fork()
    except OSError as exc:
        failed += 1
        error = error or errno.errorcode.get(exc.errno, str(exc.errno))
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    forked += 1
print(f"forked {forked} failed {failed} error {error}", flush=True)
time.sleep(60)
""",
    # 2 GiB in 64 MiB chunks; bytes(n) is calloc'ed, so even without the limit nothing is touched.
    "memhog.py": """\
import sys
chunks = []
try:
    for _ in range(32):
        chunks.append(bytes(64 * 1024 * 1024))
except MemoryError:
    print(f"MemoryError after {len(chunks) * 64} MiB", flush=True)
    sys.exit(3)
print("allocated 2048 MiB", flush=True)
""",
    "nofile.py": """\
import errno
files = []
try:
    for _ in range(10000):
        files.append(open("/dev/null"))
except OSError as exc:
    print(f"opened {len(files)} error {errno.errorcode.get(exc.errno)}", flush=True)
else:
    print(f"opened {len(files)} error None", flush=True)
""",
    # The job's leader: its credentials and death signal, and a grandchild, then silence.
    "tree.py": """\
import ctypes, os, subprocess, time
sig = ctypes.c_int(-1)
ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
child = subprocess.Popen(["sleep", "600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"pids {os.getpid()} {child.pid} uid {os.getuid()} pdeathsig {sig.value}", flush=True)
time.sleep(600)
""",
}


# Helpers.

# The server gets root's supplementary groups (this host may give it none), so that
# `id` as nobody proves they are dropped rather than never there.
SERVER_GROUPS = [0] + [g.gr_gid for g in grp.getgrall() if g.gr_name in ("adm", "disk")]
# And a umask of its own, so that `child_umask` shows it is not inherited.
SERVER_UMASK = 0o077
_SETGROUPS_EXEC = (
    f"import os, sys; os.setgroups([int(g) for g in sys.argv[1].split(',')]); os.umask({SERVER_UMASK}); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def _start(tmp_path: Path, settings: dict[str, str], **kwargs) -> GunicornServer:
    """A started server whose master (same pid, exec'd) holds SERVER_GROUPS as supplementary groups, umask 077."""
    srv = GunicornServer(tmp_path, settings, **kwargs)
    srv.args = [sys.executable, "-c", _SETGROUPS_EXEC, ",".join(map(str, SERVER_GROUPS)), *srv.args]
    return srv.start()


def _groups_of(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Groups:"):
            return sorted(int(g) for g in line.split()[1:])
    return []


def _nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


def _uid_of(pid: int) -> int | None:
    """Real uid of a process, from /proc (None if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


def _alive(pid: int) -> bool:
    state = process_state(pid)
    return state is not None and state != "Z"


def _healthy(server: GunicornServer) -> bool:
    try:
        return httpx.get(server.url("/healthz"), timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _post(server: GunicornServer, body: dict) -> dict:
    response = httpx.post(server.url("/jobs"), json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def _run(server: GunicornServer, argv: list[str], timeout: float = 30) -> tuple[str, dict]:
    """Run argv as a job to its end: (stdout+stderr text, exit payload)."""
    job = _post(server, {"argv": argv, "timeout": timeout})
    events = collect(server.url(job["urls"]["events"]), timeout=timeout + 10)
    assert events[-1].type == "exit", [e.type for e in events]
    return output_of(events), payload(events[-1])


def _first_stdout(server: GunicornServer, job: dict, timeout: float = 20) -> str:
    """The first stdout event's text of a running job."""
    with open_stream(server.url(job["urls"]["events"]), timeout=timeout) as response:
        for event in iter_events(response):
            if event.type == "stdout":
                return payload(event)["out"]
            assert event.type not in ("exit", "err"), f"job ended before printing: {event.data}"
    raise AssertionError("stream ended without output")


def _id_fields(text: str) -> dict[str, str]:
    """`id` output as {'uid': '65534(nobody)', 'gid': ..., 'groups': ...}."""
    return dict(part.split("=", 1) for part in text.split())


def _settings(scripts: Path, **overrides: str) -> dict[str, str]:
    settings = {
        "SSECMD_RUN_AS_USER": "nobody",  # the test servers default to root
        "SSECMD_ALLOWED_COMMANDS": ALLOWED,
        "SSECMD_CHILD_CWD": str(scripts),
    }
    settings.update(overrides)
    return settings


# Fixtures.


@pytest.fixture(scope="module")
def scripts():
    """A world-readable directory with the scripts that nobody runs (pytest's tmp dirs are not)."""
    directory = Path(tempfile.mkdtemp(prefix="ssecmd-containment-", dir="/tmp"))
    try:
        os.chmod(directory, 0o755)
        for name, text in {**SCRIPTS, "cwd-marker": "here\n"}.items():
            path = directory / name
            path.write_text(text)
            os.chmod(path, 0o644)
        # A set-user-ID-root copy of id, which no_new_privileges must keep from becoming root.
        shutil.copy(shutil.which("id"), directory / "suid-id")
        os.chmod(directory / "suid-id", 0o4755)
        (directory / "out").mkdir(mode=0o777)
        os.chmod(directory / "out", 0o777)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def start_server(tmp_path):
    """Like conftest's make_server, but the servers hold root's supplementary groups."""
    started = []

    def make(settings, **kwargs) -> GunicornServer:
        started.append(_start(tmp_path, settings, **kwargs))
        return started[-1]

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def contained(tmp_path_factory, scripts):
    """A root server whose commands run as nobody, with small rlimits and a secret in its environment."""
    settings = _settings(
        scripts,
        SSECMD_RLIMIT_CPU="1",
        SSECMD_RLIMIT_AS=str(AS_BYTES),
        SSECMD_RLIMIT_NOFILE=str(NOFILE),
        SSECMD_RLIMIT_NPROC=str(NPROC),
        SSECMD_ENV_PASSTHROUGH="CONTAINMENT_SHARED",
        SSECMD_ENV_SET="CONTAINMENT_FIXED=fixed-value",
    )
    extra = {SECRET_NAME: SECRET_VALUE, "CONTAINMENT_SHARED": "shared-value"}
    srv = _start(tmp_path_factory.mktemp("contained"), settings, extra_env=extra)
    yield srv
    srv.stop()


# Who commands run as.


def test_commands_run_as_nobody_with_only_its_group(contained):
    nobody = _nobody()
    group = grp.getgrgid(nobody.pw_gid).gr_name
    assert _groups_of(contained.worker_pids()[0]) == sorted(SERVER_GROUPS)  # the premise
    events = collect(contained.url("/run?command=id"))
    assert payload(events[-1])["code"] == 0
    fields = _id_fields(output_of(events, "stdout"))
    assert fields["uid"] == f"{nobody.pw_uid}(nobody)"
    assert fields["gid"] == f"{nobody.pw_gid}({group})"
    # Root's supplementary groups (gid 0 above all) are dropped, not inherited.
    assert fields["groups"] == f"{nobody.pw_gid}({group})"
    numeric = output_of(collect(contained.url("/run?command=id%20-G")), "stdout").split()
    assert numeric == [str(nobody.pw_gid)]


def test_run_as_root_is_an_explicit_opt_out(start_server, scripts):
    srv = start_server(_settings(scripts, SSECMD_RUN_AS_USER="root"))
    events = collect(srv.url("/run?command=id"))
    assert _id_fields(output_of(events, "stdout"))["uid"] == "0(root)"


def test_run_as_group_overrides_the_primary_group(start_server, scripts):
    daemon = grp.getgrnam("daemon")
    srv = start_server(_settings(scripts, SSECMD_RUN_AS_GROUP="daemon"))
    fields = _id_fields(output_of(collect(srv.url("/run?command=id")), "stdout"))
    assert fields["uid"] == f"{_nobody().pw_uid}(nobody)"
    assert fields["gid"] == f"{daemon.gr_gid}(daemon)"
    assert fields["groups"] == f"{daemon.gr_gid}(daemon)"


@pytest.mark.parametrize(
    ("setting", "name"),
    [("SSECMD_RUN_AS_USER", "no-such-user-ssecmd"), ("SSECMD_RUN_AS_GROUP", "no-such-group-ssecmd")],
)
def test_unknown_run_as_user_or_group_refuses_to_start(tmp_path, scripts, setting, name):
    text = GunicornServer(tmp_path, _settings(scripts, **{setting: name})).refused()
    assert "configuration error" in text and "no such user or group" in text and name in text, text


# Resource limits.


def test_fork_bomb_is_stopped_by_rlimit_nproc(contained, scripts):
    nobody = _nobody().pw_uid
    job = _post(contained, {"argv": [SYSTEM_PYTHON, str(scripts / "forkbomb.py")], "timeout": 30})
    try:
        report = _first_stdout(contained, job).split()
        forked, failed, error = int(report[1]), int(report[3]), report[5]
        assert error == "EAGAIN" and failed > 0, report
        assert forked < NPROC, report
        members = [pid for pid in group_members(job["pid"]) if _alive(pid)]
        assert len(members) <= NPROC, members
        assert all(_uid_of(pid) in (nobody, None) for pid in members)
    finally:
        cancelled = httpx.delete(contained.url(job["urls"]["self"]), timeout=15)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert wait_until(lambda: not group_members(job["pid"]), timeout=5), group_members(job["pid"])


def test_memory_hog_is_stopped_by_rlimit_as(contained, scripts):
    started = time.monotonic()
    output, exit_event = _run(contained, [SYSTEM_PYTHON, str(scripts / "memhog.py")])
    assert "MemoryError after" in output, output
    assert int(output.split()[2]) < AS_BYTES // (1024 * 1024)
    assert exit_event["reason"] == "exited" and exit_event["code"] == 3
    assert time.monotonic() - started < 10


def test_busy_loop_is_killed_by_rlimit_cpu(contained):
    started = time.monotonic()
    _, exit_event = _run(contained, [SYSTEM_PYTHON, "-c", "while True: pass"], timeout=15)
    assert exit_event["reason"] == "killed", exit_event
    assert exit_event["signal_name"] in ("SIGXCPU", "SIGKILL"), exit_event
    assert exit_event["code"] is None
    assert time.monotonic() - started < 10


def test_opening_files_fails_beyond_rlimit_nofile(contained, scripts):
    output, exit_event = _run(contained, [SYSTEM_PYTHON, str(scripts / "nofile.py")])
    _, opened, _, error = output.split()
    assert error == "EMFILE", output
    assert 0 < int(opened) < NOFILE
    assert exit_event["code"] == 0


# Where and with what environment commands run.


def test_commands_run_in_child_cwd(contained, scripts):
    code = "import os; print(os.getcwd()); print(*sorted(os.listdir('.')))"
    output, exit_event = _run(contained, [SYSTEM_PYTHON, "-c", code])
    cwd, listing = output.splitlines()
    assert cwd == str(scripts)
    assert "cwd-marker" in listing.split()
    assert exit_event["code"] == 0


def test_environment_is_built_not_inherited(contained):
    output, exit_event = _run(contained, ["env"])
    assert exit_event["code"] == 0
    env = dict(line.split("=", 1) for line in output.splitlines())
    assert SECRET_NAME not in env and SECRET_VALUE not in output
    assert not [name for name in env if name.startswith("SSECMD_")], env  # e.g. the session secret
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["CONTAINMENT_SHARED"] == "shared-value"  # env_passthrough
    assert env["CONTAINMENT_FIXED"] == "fixed-value"  # env_set
    assert env["HOME"] == "/tmp"


# Death of the worker.


def test_pdeathsig_survives_the_switch_to_nobody(start_server, scripts):
    srv = start_server(_settings(scripts))
    nobody = _nobody().pw_uid
    job = _post(srv, {"argv": [SYSTEM_PYTHON, str(scripts / "tree.py")]})
    fields = _first_stdout(srv, job).split()
    leader, grandchild, uid, pdeathsig = int(fields[1]), int(fields[2]), int(fields[4]), int(fields[6])
    assert uid == nobody and _uid_of(grandchild) == nobody
    # Setting the user clears the death signal: it must have been set after the switch.
    assert pdeathsig == signal.SIGKILL
    (worker,) = srv.worker_pids()
    os.kill(worker, signal.SIGKILL)
    assert wait_until(lambda: not _alive(leader) and not _alive(grandchild), timeout=5), (
        process_state(leader),
        process_state(grandchild),
    )
    assert wait_until(lambda: not [pid for pid in group_members(leader) if _alive(pid)], timeout=5)
    # The master replaces the worker. Waiting for it to serve also keeps teardown quick: a TERM that
    # reaches a worker before it has installed its signal handlers is lost (graceful_timeout wait).
    assert wait_until(lambda: _healthy(srv) and worker not in srv.worker_pids(), timeout=10)


# Roles with users of their own: one role's jobs cannot read another's through /proc.


def test_two_roles_jobs_run_as_their_own_users_and_cannot_read_each_others_environment(start_server, scripts,
                                                                                       tmp_path):
    creds = Credentials()
    alice = creds.add_token("alice", ["team-a"])
    bob = creds.add_token("bob", ["team-b"])
    roles = {"team-a": {"commands": ["*"], "run_as_user": "nobody"},
             "team-b": {"commands": ["*"], "run_as_user": "daemon", "run_as_group": "daemon"}}
    audit = tmp_path / "audit.log"
    srv = start_server(_settings(scripts, SSECMD_ALLOWED_COMMANDS=f"{ALLOWED} cat", SSECMD_ROLES=json.dumps(roles),
                                 SSECMD_AUDIT_LOG=str(audit), **creds.env()))

    def run(token: str, argv: list[str]) -> tuple[str, dict]:
        job = start(srv, token, {"argv": argv})
        done = finished(srv, token, job["id"])
        return output(srv, token, job["id"]).decode(), done

    daemon = pwd.getpwnam("daemon")
    assert _id_fields(run(alice, ["id"])[0])["uid"] == f"{_nobody().pw_uid}(nobody)"
    assert _id_fields(run(bob, ["id"])[0])["uid"] == f"{daemon.pw_uid}(daemon)"
    starts = wait_for_audit(audit, lambda r: r["audit"] == "job_start" and r["argv"] == ["id"])
    assert sorted(r["run_as_uid"] for r in starts) == sorted([_nobody().pw_uid, daemon.pw_uid])

    napping = start(srv, bob, {"argv": ["sleep", "30"]})
    try:
        environ = f"/proc/{napping['pid']}/environ"
        text, done = run(alice, ["cat", environ])
        assert "Permission denied" in text and done["exit_code"] == 1, text
        # Jobs of one user can: that is why users who must not see each other's jobs get roles of their own.
        text, done = run(bob, ["cat", environ])
        assert done["exit_code"] == 0 and "PATH=" in text, text
    finally:
        HTTP.delete(srv.url(f"/jobs/{napping['id']}"), headers=bearer(bob))


# no_new_privileges and the umask.


def test_no_new_privileges_keeps_set_uid_programs_from_gaining_root(start_server, scripts):
    suid_id = str(scripts / "suid-id")
    command = f"/run?command={suid_id}%20-u"
    srv = start_server(_settings(scripts, SSECMD_ALLOWED_COMMANDS=suid_id))
    assert output_of(collect(srv.url(command)), "stdout") == f"{_nobody().pw_uid}\n"
    # The premise: without it, the same program does become root.
    unsafe = start_server(_settings(scripts, SSECMD_ALLOWED_COMMANDS=suid_id, SSECMD_NO_NEW_PRIVILEGES="false"))
    assert output_of(collect(unsafe.url(command)), "stdout") == "0\n"


def _ping_group_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ping_group_range").read_text().split()
    return int(low), int(high)


# Every program of the default allowlist, with an argument list that succeeds as nobody (ping aside).
DEFAULT_PROGRAM_RUNS = {
    "echo": ["echo", "hi"], "printf": ["printf", "x"], "ls": ["ls", "/"], "date": ["date"], "uptime": ["uptime"],
    "df": ["df", "/"], "du": ["du", "-s", "/etc/hostname"], "free": ["free"],
    "vmstat": ["vmstat", "1", "2"], "sleep": ["sleep", "0"],
    "seq": ["seq", "3"], "cat": ["cat", "/etc/hostname"], "head": ["head", "-n1", "/etc/passwd"],
    "tail": ["tail", "-n1", "/etc/passwd"], "wc": ["wc", "-l", "/etc/passwd"], "whoami": ["whoami"], "id": ["id"],
    "hostname": ["hostname"], "uname": ["uname", "-a"], "true": ["true"],
}


def test_every_default_program_works_with_no_new_privileges(start_server, scripts):
    from app.config import DEFAULT_ALLOWED_COMMANDS

    assert set(DEFAULT_ALLOWED_COMMANDS) == {*DEFAULT_PROGRAM_RUNS, "false", "yes", "ping"}
    srv = start_server(_settings(scripts, SSECMD_ALLOWED_COMMANDS=" ".join(DEFAULT_ALLOWED_COMMANDS)))
    for name, argv in DEFAULT_PROGRAM_RUNS.items():
        output, exit_event = _run(srv, argv)
        assert (exit_event["reason"], exit_event["code"]) == ("exited", 0), (name, output)
    assert _run(srv, ["whoami"])[0] == "nobody\n"
    assert _run(srv, ["false"])[1]["code"] == 1
    # yes writes hundreds of MB in its second, all kept on disk: its record and first bytes tell enough.
    job = _post(srv, {"argv": ["yes"], "timeout": 1})
    def record() -> dict:
        return httpx.get(srv.url(job["urls"]["self"]), timeout=10).json()

    assert wait_until(lambda: record()["ended_at"] is not None, timeout=20)
    assert record()["reason"] == "timeout"
    with httpx.stream("GET", srv.url(job["urls"]["output"]), timeout=10) as response:
        assert next(response.iter_bytes()).startswith(b"y\ny\n")
    # ping: its file capability is what no_new_privileges withholds; it then needs ICMP datagram sockets.
    output, exit_event = _run(srv, ["ping", "-c", "1", "-W", "2", "127.0.0.1"])
    low, high = _ping_group_range()
    if low <= _nobody().pw_gid <= high:
        assert exit_event["code"] == 0, output
    else:
        assert exit_event["code"] != 0 and "ping_group_range" in srv.log()  # warned at start-up


def test_ping_under_no_new_privileges_needs_ping_group_range():
    # In a network namespace of its own (the setting is per namespace), as nobody, no_new_privileges on.
    probe = str(Path(__file__).parent / "helpers" / "ping_probe.py")
    run = subprocess.run([sys.executable, probe, "0 2147483647"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["code"] == 0, run.stdout
    run = subprocess.run([sys.executable, probe, "1 0"], capture_output=True, text=True, timeout=60)
    result = json.loads(run.stdout)
    assert result["code"] != 0 and "permitted" in result["output"], result


def test_child_umask_is_the_setting_not_the_server_s(start_server, scripts):
    code = "import os, sys; p = sys.argv[1]; open(p, 'w').close(); print(oct(os.stat(p).st_mode & 0o777))"
    srv = start_server(_settings(scripts))
    output, _ = _run(srv, [SYSTEM_PYTHON, "-c", code, str(scripts / "out" / "default")])
    assert output == "0o644\n"  # 022, not the server's 077
    srv = start_server(_settings(scripts, SSECMD_CHILD_UMASK="027"))
    output, _ = _run(srv, [SYSTEM_PYTHON, "-c", code, str(scripts / "out" / "set")])
    assert output == "0o640\n"
