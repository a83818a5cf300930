"""app.process.cgroups: reading the host, the master's decision, and cleaning up.

The delegated mode is what systemd gives a unit with Delegate=yes: a cgroup
marked with the trusted.delegate attribute, owned by the service. Here a
scratch cgroup is marked so, and a subprocess placed in it decides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.process import cgroups
from tests import cgroup_support

from .server import REPO

needs_cgroup = pytest.mark.skipif(cgroup_support.skip_reason() is not None, reason=str(cgroup_support.skip_reason()))

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = """\
22 1 0:21 / /proc rw,nosuid - proc proc rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""


def test_the_cgroup2_mount_is_found_in_mountinfo():
    assert cgroups.cgroup2_mount(HYBRID) == "/sys/fs/cgroup/unified"
    assert cgroups.cgroup2_mount(UNIFIED) == "/sys/fs/cgroup"
    assert cgroups.cgroup2_mount(HYBRID.splitlines()[0]) is None
    escaped = "41 31 0:38 / /srv/my\\040cgroups rw - cgroup2 cgroup2 rw\n"
    assert cgroups.cgroup2_mount(escaped) == "/srv/my cgroups"


def test_the_own_cgroup_is_the_v2_line():
    assert cgroups.own_cgroup("9:name=systemd:/\n4:memory:/x\n0::/\n") == "/"
    assert cgroups.own_cgroup("0::/system.slice/sse-commander.service/supervisor\n") == (
        "/system.slice/sse-commander.service/supervisor"
    )
    assert cgroups.own_cgroup("4:memory:/x\n") is None  # a host with cgroup v1 only


def test_off_means_process_groups():
    plan = cgroups.process_groups("cgroup = off")
    assert not plan.uses_cgroups
    assert plan.public() == {"mode": "process_group", "cgroup": None, "limits": []}
    assert "process groups (cgroup = off)" in plan.describe()


@pytest.fixture
def restore_plan():
    saved = cgroups._server_plan
    yield
    cgroups._server_plan = saved


@needs_cgroup
def test_in_a_writable_mount_the_server_gets_a_cgroup_of_its_own_and_stale_ones_go(restore_plan):
    root = Path(cgroup_support.writable_root())
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = root / f"sse-commander-{dead.pid}"  # a server killed with -9 left this
    (stale / "worker-1").mkdir(parents=True)
    plan = cgroups.establish("auto", os.getpid())
    try:
        assert plan.uses_cgroups and plan.kind == "mount"
        assert plan.base == str(root / f"sse-commander-{os.getpid()}")
        assert cgroups.server_plan() is plan
        assert not stale.exists()
        job = cgroups.WorkerCgroups(plan, 4242).create("abc")
        assert Path(job.path) == Path(plan.base) / "worker-4242" / "job-abc"
        assert not job.populated() and job.usage()[0] == 0
        assert cgroups.release_worker(plan, 4242) == (0, True)
    finally:
        assert cgroups.release_server(plan)
    assert not Path(plan.base).exists()


@needs_cgroup
def test_required_or_off(restore_plan):
    assert cgroups.establish("off", os.getpid()).reason == "cgroup = off"
    plan = cgroups.establish("required", os.getpid())
    try:
        assert plan.uses_cgroups
    finally:
        cgroups.release_server(plan)


DELEGATED_PROBE = textwrap.dedent(
    """\
    import json, os, sys
    sys.path.insert(0, {repo!r})
    open({procs!r}, "w").write(str(os.getpid()))  # as systemd starts a service in its cgroup
    from app.process import cgroups
    plan = cgroups.establish("auto", os.getpid())
    job = cgroups.WorkerCgroups(plan, os.getpid()).create("j1")
    print(json.dumps({{"kind": plan.kind, "base": plan.base, "job": job.path,
                       "own": open("/proc/self/cgroup").read().splitlines()[-1]}}))
    """
)


@needs_cgroup
def test_a_delegated_cgroup_is_used_in_place_with_the_server_moved_into_a_leaf():
    with cgroup_support.scratch_cgroup() as service:
        os.setxattr(service, "trusted.delegate", b"1")  # what systemd does for Delegate=yes
        probe = DELEGATED_PROBE.format(repo=str(REPO), procs=str(service / "cgroup.procs"))
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["kind"] == "delegated" and report["base"] == str(service)
        # The server left the service's cgroup for supervisor/: a cgroup that hands controllers to its
        # children may hold no process itself.
        assert report["own"] == f"0::/{service.name}/supervisor"
        job = Path(report["job"])
        assert job.name == "job-j1" and job.parent.name.startswith("worker-") and job.parent.parent == service
        assert (service / "supervisor").is_dir()
