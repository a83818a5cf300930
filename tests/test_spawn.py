"""app.process.spawn in-process: what a spawned command gets, how failures are reported, that the worker keeps nothing.

The server-level tests (test_containment.py, test_processes.py) cover the same
properties end to end; these pin them down at the source, one at a time. A
child that hangs before its exec comes from a hanging FUSE file system in a
mount namespace of its own (tests/fusehang.py, probed in a subprocess by
tests/helpers/stall_probe.py), or, in-process, from a frozen cgroup.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import gevent
import pytest

from app.process.spawn import ChildProcess, SpawnError, environment_block, spawn, start_child
from tests import cgroup_support, fusehang
from tests.server import HELPERS, children_of, process_state

PYTHON = os.path.realpath(sys.executable)
SYSTEM_PYTHON = "/usr/bin/python3"
REPO = Path(__file__).resolve().parent.parent
ENV = environment_block({"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "ONLY": "this"})

# Everything a child can tell about itself, as JSON on stdout.
REPORT = textwrap.dedent(
    """\
    import ctypes, json, os, resource, sys
    fds = [int(f) for f in os.listdir("/proc/self/fd")]
    fds = sorted(f for f in fds if os.path.exists(f"/proc/self/fd/{f}"))  # without listdir's own
    sig = ctypes.c_int(-1)
    ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
    print(json.dumps({
        "fds": fds,
        "stdin": os.readlink("/proc/self/fd/0"),
        "stdin_data": sys.stdin.read(),
        "pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0), "ppid": os.getppid(),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "uid": os.getresuid(), "gid": os.getresgid(), "groups": sorted(os.getgroups()),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "cpu": resource.getrlimit(resource.RLIMIT_CPU),
        "pdeathsig": sig.value,
    }))
    """
)


def _collect(proc: ChildProcess) -> tuple[int | None, bytes, bytes]:
    """Wait for the child; (returncode, stdout, stderr). The pipes are closed."""
    outputs = []
    for pipe in (proc.stdout, proc.stderr):
        fd = pipe.fileno()
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        outputs.append(b"".join(chunks))
        pipe.close()
    return proc.wait(timeout=20), outputs[0], outputs[1]


def _report(python: str = PYTHON, **kwargs) -> dict:
    kwargs.setdefault("cwd", "/")
    proc = spawn(python, [python, "-c", REPORT], ENV, **kwargs)
    code, out, err = _collect(proc)
    assert code == 0, err
    return json.loads(out)


def _open_fds() -> set[int]:
    gevent.sleep(0)  # gevent's os.close of a pipe completes on the loop
    return {int(f) for f in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{f}")}


def test_echo_output_and_exit_code():
    code, out, err = _collect(spawn("/bin/echo", ["echo", "hi"], ENV, cwd="/tmp"))
    assert (code, out, err) == (0, b"hi\n", b"")
    code, out, err = _collect(spawn("/bin/sh", ["sh", "-c", "echo oops >&2; exit 3"], ENV, cwd="/tmp"))
    assert (code, out, err) == (3, b"", b"oops\n")


def test_merged_stderr_shares_the_stdout_pipe_in_exact_order():
    before = _open_fds()
    proc = spawn("/bin/sh", ["sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"], ENV, cwd="/",
                 merge_stderr=True)
    assert proc.stderr is None
    chunks = []
    while chunk := os.read(proc.stdout.fileno(), 65536):
        chunks.append(chunk)
    proc.close_pipes()
    assert proc.wait(timeout=20) == 0
    assert b"".join(chunks) == b"out1\nerr1\nout2\nerr2\n"
    assert _open_fds() == before  # no descriptor left behind by the shared pipe


def test_a_stdin_pipe_is_ours_non_blocking_close_on_exec_and_the_childs_alone():
    import fcntl

    before = _open_fds()
    proc = spawn("/bin/cat", ["cat"], ENV, cwd="/", stdin_pipe=True)
    fd = proc.stdin.fileno()
    assert not os.get_blocking(fd)  # a full pipe answers EAGAIN, never blocks the worker
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # no other child inherits it
    assert os.write(fd, b"typed\n") == 6
    proc.stdin.close()  # end of file for cat
    code, out, err = _collect(proc)
    assert (code, out, err) == (0, b"typed\n", b"")
    assert _open_fds() == before
    # The child's stdin is that pipe and it holds no other descriptor of ours.
    report = spawn(PYTHON, [PYTHON, "-c", REPORT], ENV, cwd="/", stdin_pipe=True)
    os.write(report.stdin.fileno(), b"answer")
    report.stdin.close()
    code, out, err = _collect(report)
    assert code == 0, err
    child = json.loads(out)
    assert child["fds"] == [0, 1, 2] and child["stdin"].startswith("pipe:") and child["stdin_data"] == "answer"


def test_argv0_and_executable_are_separate_and_no_shell_runs():
    code, out, _ = _collect(spawn("/bin/echo", ["whatever", "$HOME", "a;b", "*"], ENV, cwd="/"))
    assert code == 0 and out == b"$HOME a;b *\n"


def test_killed_by_a_signal_is_a_negative_returncode():
    code, _, _ = _collect(spawn("/bin/sh", ["sh", "-c", "kill -9 $$"], ENV, cwd="/"))
    assert code == -signal.SIGKILL


def test_stdio_session_cwd_environment_and_no_other_fds(tmp_path):
    inheritable = os.open("/dev/null", os.O_RDONLY)  # not close-on-exec: must still not reach the child
    os.set_inheritable(inheritable, True)
    try:
        report = _report(cwd=str(tmp_path))
    finally:
        os.close(inheritable)
    assert report["fds"] == [0, 1, 2]
    assert report["stdin"] == "/dev/null" and report["stdin_data"] == ""
    assert report["pid"] == report["pgid"] == report["sid"]  # its own session and group
    assert report["ppid"] == os.getpid()
    assert report["cwd"] == str(tmp_path)
    assert report["env"] == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "ONLY": "this"}


def test_signal_dispositions_and_mask_are_the_defaults():
    # Python ignores SIGPIPE; give this process a handler and a blocked signal too.
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        # cat reports on itself (Python would ignore SIGPIPE and SIGXFSZ at its own start).
        code, out, _ = _collect(spawn("/bin/cat", ["cat", "/proc/self/status"], ENV, cwd="/"))
        assert signal.SIGUSR2 in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # the parent's mask is restored
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
        signal.signal(signal.SIGUSR1, previous)
    assert code == 0
    status = dict(line.split(":", 1) for line in out.decode().splitlines())
    assert int(status["SigIgn"], 16) == 0
    assert int(status["SigCgt"], 16) == 0
    # The worker's own mask is what the command gets (it is empty in a gunicorn worker).
    assert int(status["SigBlk"], 16) == 1 << (signal.SIGUSR2 - 1)


def test_rlimits_and_pdeathsig():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    value = min(64, hard if hard != resource.RLIM_INFINITY else 64)
    report = _report(rlimits=[(resource.RLIMIT_NOFILE, value), (resource.RLIMIT_CPU, 5)], pdeathsig=signal.SIGKILL)
    assert report["nofile"] == [value, value]
    assert report["cpu"] == [5, 5]
    assert report["pdeathsig"] == signal.SIGKILL
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)  # the worker's are untouched


def test_no_pdeathsig_unless_asked():
    assert _report()["pdeathsig"] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason=f"{SYSTEM_PYTHON} missing")
def test_run_as_user_drops_supplementary_groups_and_keeps_pdeathsig():
    nobody = pwd.getpwnam("nobody")
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)  # a threaded worker: its credentials must not change
    thread.start()
    try:
        report = _report(
            SYSTEM_PYTHON,
            uid=nobody.pw_uid,
            gid=nobody.pw_gid,
            rlimits=[(resource.RLIMIT_CPU, 7)],
            pdeathsig=signal.SIGKILL,
        )
        thread_status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    finally:
        stop.set()
        thread.join()
    assert report["uid"] == [nobody.pw_uid] * 3
    assert report["gid"] == [nobody.pw_gid] * 3
    assert report["groups"] == [nobody.pw_gid]
    assert report["pdeathsig"] == signal.SIGKILL  # set after the switch, which clears it
    assert report["cpu"] == [7, 7]
    assert os.getresuid() == (0, 0, 0)
    assert "Uid:\t0\t0\t0\t0" in thread_status


@pytest.mark.parametrize(
    ("executable", "expected"),
    [("/nonexistent/binary", errno.ENOENT), ("plain-file", errno.EACCES), ("/tmp", errno.EACCES)],
)
def test_exec_failure_is_an_oserror_with_errno(tmp_path, executable, expected):
    if executable == "plain-file":
        executable = str(tmp_path / executable)
        Path(executable).write_text("not a program\n")
        os.chmod(executable, 0o644)
    before = _open_fds()
    with pytest.raises(SpawnError) as caught:
        spawn(executable, ["x"], ENV, cwd="/")
    assert caught.value.errno == expected
    assert caught.value.stage == "execute" and not caught.value._failed_chdir
    assert caught.value.filename == executable
    assert _open_fds() == before


def test_chdir_failure_is_reported_distinctly():
    with pytest.raises(SpawnError) as caught:
        spawn("/bin/echo", ["echo"], ENV, cwd="/nonexistent/dir")
    assert caught.value.errno == errno.ENOENT
    assert caught.value._failed_chdir and caught.value.filename == "/nonexistent/dir"


def _zombie_children() -> list[int]:
    return [pid for pid in children_of(os.getpid()) if process_state(pid) == "Z"]


def test_failed_children_are_reaped():
    # A child that fails before its exec sends no SIGCHLD (libev's reaping would never see it).
    before = set(children_of(os.getpid()))
    for _ in range(5):
        with pytest.raises(SpawnError):
            spawn("/nonexistent/binary", ["x"], ENV, cwd="/")
    assert set(children_of(os.getpid())) - before == set()
    assert _zombie_children() == []


def test_the_worker_keeps_no_descriptor_and_no_zombie():
    before = _open_fds()
    pids = []
    for _ in range(50):
        proc = spawn("/bin/true", ["true"], ENV, cwd="/")
        pids.append(proc.pid)
        assert _collect(proc)[0] == 0
    assert _open_fds() == before
    assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]


def test_many_at_once_from_greenlets():
    def one(i: int) -> bytes:
        proc = spawn("/bin/echo", ["echo", str(i)], ENV, cwd="/")
        os.set_blocking(proc.stdout.fileno(), False)
        data = b""
        while True:
            gevent.get_hub().wait(gevent.get_hub().loop.io(proc.stdout.fileno(), 1))
            chunk = os.read(proc.stdout.fileno(), 100)
            if not chunk:
                break
            data += chunk
        proc.stdout.close()
        proc.stderr.close()
        assert proc.wait(timeout=20) == 0
        return data

    greenlets = [gevent.spawn(one, i) for i in range(100)]
    gevent.joinall(greenlets, timeout=30, raise_error=True)
    assert [g.value for g in greenlets] == [f"{i}\n".encode() for i in range(100)]


# A child that hangs before its exec (a hung NFS chdir), probed from outside.

needs_fuse = pytest.mark.skipif(fusehang.available() is not None, reason=str(fusehang.available()))


@pytest.fixture(scope="module")
def stalled_child_report(tmp_path_factory):
    """stall_probe.py's report on a child hanging in the chdir into a hanging file system."""
    control = fusehang.Control.make(tmp_path_factory.mktemp("stall"))
    result = subprocess.run(
        [sys.executable, str(HELPERS / "in_private_mount.py"), str(control.dir), "--",
         sys.executable, str(HELPERS / "stall_probe.py"), str(control.dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["stuck"], report  # the premise: the child did hang in its chdir
    return report


@needs_fuse
def test_the_event_loop_runs_while_a_child_hangs_before_its_exec(stalled_child_report):
    # The worker is never suspended by a spawn (a vfork from the event loop's thread would freeze it).
    assert stalled_child_report["hub_ran"]


@needs_fuse
def test_the_thread_that_cloned_the_child_sleeps_until_its_exec(stalled_child_report):
    # CLONE_VFORK: nothing of the worker's runs on the thread whose stack and errno the child borrows.
    assert stalled_child_report["parent_in_clone"]


@needs_fuse
def test_every_signal_is_blocked_while_the_child_prepares(stalled_child_report):
    # glibc's internal signals 32 and 33 too (pthread_sigmask leaves them open); the kernel never
    # records SIGKILL and SIGSTOP as blocked.
    blocked = int(stalled_child_report["sigblk"], 16)
    assert blocked == ((1 << 64) - 1) & ~(1 << (signal.SIGKILL - 1)) & ~(1 << (signal.SIGSTOP - 1))


@needs_fuse
def test_the_child_stack_has_a_guard_page(stalled_child_report):
    assert stalled_child_report["stack_guard"]


# Hanging on purpose in-process: a frozen cgroup stops the child as it joins.

needs_cgroup = pytest.mark.skipif(cgroup_support.skip_reason() is not None, reason=str(cgroup_support.skip_reason()))


def _start_frozen(cgroup, argv=("sleep", "30")) -> object:
    fd = os.open(cgroup / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    try:
        return start_child(f"/bin/{argv[0]}", list(argv), ENV, cwd="/", cgroup_procs=fd)
    finally:
        os.close(fd)


def _wait_for(predicate, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.02)
    return predicate()


@needs_cgroup
def test_the_child_joins_its_cgroup_before_its_exec():
    with cgroup_support.scratch_cgroup() as cgroup:
        fd = os.open(cgroup / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        try:
            proc = spawn("/bin/cat", ["cat", "/proc/self/cgroup"], ENV, cwd="/", cgroup_procs=fd)
        finally:
            os.close(fd)
        code, out, _ = _collect(proc)
    assert code == 0
    assert f"0::/{cgroup.name}\n" in out.decode()


@needs_cgroup
def test_a_child_hanging_before_its_exec_is_killed_through_its_pidfd():
    with cgroup_support.scratch_cgroup(frozen=True) as cgroup:
        starting = _start_frozen(cgroup)
        assert _wait_for(lambda: cgroup_support.members(cgroup))  # joined, and frozen there
        assert starting.stage == "join its cgroup"
        assert starting.kill(signal.SIGTERM)  # blocked until the exec: it stays
        gevent.sleep(0.2)
        assert cgroup_support.members(cgroup)
        assert starting.kill(signal.SIGKILL)
        proc = starting.wait()
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert proc.stuck_at == "join its cgroup"  # it never exec'd
    assert _zombie_children() == []


@needs_cgroup
def test_a_spawn_interrupted_while_the_child_prepares_kills_it_and_keeps_nothing():
    # Whoever started the command is gone: the command must not run on unwatched, and no descriptor
    # or zombie may be left.
    before = _open_fds()
    children_before = set(children_of(os.getpid()))
    with cgroup_support.scratch_cgroup(frozen=True) as cgroup:
        fd = os.open(cgroup / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        try:
            starting = [
                gevent.spawn(spawn, "/bin/sleep", ["sleep", "30"], ENV, cwd="/", cgroup_procs=fd) for _ in range(10)
            ]
            assert _wait_for(lambda: len(cgroup_support.members(cgroup)) == 10)
        finally:
            os.close(fd)
        for greenlet in starting:
            greenlet.kill()
            assert isinstance(greenlet.value, gevent.GreenletExit)
        assert _wait_for(lambda: not set(children_of(os.getpid())) - children_before)
    assert _open_fds() == before


def test_the_pidfd_is_the_child_s():
    proc = spawn("/bin/sleep", ["sleep", "30"], ENV, cwd="/")
    try:
        fdinfo = Path(f"/proc/self/fdinfo/{proc.pidfd}").read_text()
        assert f"Pid:\t{proc.pid}\n" in fdinfo
        assert proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert proc.pidfd == -1 and not proc.send_signal(signal.SIGKILL)  # closed once reaped
    finally:
        proc.close_pipes()


def test_umask_and_no_new_privs_are_set_as_asked():
    script = "umask; grep NoNewPrivs /proc/self/status"
    code, out, _ = _collect(spawn("/bin/sh", ["sh", "-c", script], ENV, cwd="/", umask=0o027, no_new_privs=True))
    assert code == 0 and out.split() == [b"0027", b"NoNewPrivs:", b"1"]
    old = os.umask(0o077)
    try:
        code, out, _ = _collect(spawn("/bin/sh", ["sh", "-c", script], ENV, cwd="/"))
    finally:
        os.umask(old)
    assert out.split() == [b"0077", b"NoNewPrivs:", b"0"]  # neither unless asked


def test_exit_statuses_reach_their_waiters_when_libev_reaps_too():
    # Exec'd commands are SIGCHLD children: libev's handler reaps them, maybe before the spawner
    # thread has returned; each status must still reach its own ChildProcess.
    def one(i: int) -> int | None:
        proc = spawn("/bin/sh", ["sh", "-c", f"exit {i % 7}"], ENV, cwd="/")
        proc.close_pipes()
        return proc.wait(timeout=20)

    greenlets = [gevent.spawn(one, i) for i in range(200)]
    gevent.joinall(greenlets, timeout=60, raise_error=True)
    assert [g.value for g in greenlets] == [i % 7 for i in range(200)]


def test_works_with_stdio_closed_in_the_worker(tmp_path):
    # The pipes then get descriptors 0-2; the child must still see them as its stdout/stderr.
    result = tmp_path / "result"
    script = textwrap.dedent(
        f"""\
        import os, sys, traceback
        sys.path.insert(0, {str(REPO)!r})
        for fd in (0, 1, 2):
            os.close(fd)
        try:
            from app.process.spawn import spawn, environment_block
            proc = spawn("/bin/sh", ["sh", "-c", "cat; echo out; echo err >&2"], environment_block({{}}), cwd="/")
            outs = [os.read(pipe.fileno(), 100) for pipe in (proc.stdout, proc.stderr)]
            report = repr((proc.wait(10), proc.stdout.fileno(), outs))
        except BaseException:
            report = repr(traceback.format_exc())
        open({str(result)!r}, "w").write(report)
        os._exit(0)  # stdout and stderr are gone: no flushing them at exit
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    report = eval(result.read_text())
    assert isinstance(report, tuple), report
    code, fd, outs = report
    assert code == 0 and outs == [b"out\n", b"err\n"]
    assert fd >= 3


def test_bad_arguments_are_refused_before_any_child():
    with pytest.raises(ValueError):
        spawn("/bin/echo", ["echo", "a\0b"], ENV, cwd="/")
    with pytest.raises(ValueError):
        environment_block({"A=B": "c"})
    with pytest.raises(ValueError):
        spawn("/bin/echo", ["echo"], ENV, cwd="/", uid=65534)

