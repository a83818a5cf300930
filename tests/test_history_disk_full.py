"""A full disk under the history (a small tmpfs): jobs go on, lost bytes are counted, /healthz says degraded."""

from __future__ import annotations

import os
import re
import subprocess
import time

import httpx
import pytest

from .server import PYTHON, GunicornServer, helper, wait_until
from .sse_client import collect, output_of

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_loses_history_not_the_job(tmp_path, small_disk):
    srv = GunicornServer(tmp_path, {"SSECMD_DATA_DIR": str(small_disk / "history")}).start()
    try:
        # 4 MB of output into a 1 MB disk, written in 64 KiB pieces.
        argv = [PYTHON, helper("emit.py"), *["out:61*65536:0.002"] * 64]
        job = httpx.post(srv.url("/jobs"), json={"argv": argv}).json()
        events = collect(srv.url(f"/jobs/{job['id']}/events"), timeout=60)
        assert events[-1].type == "exit" and len(output_of(events)) == 4 * 1024 * 1024  # streamed in full

        health = httpx.get(srv.url("/healthz"))
        assert health.status_code == 200  # a load balancer keeps the node
        assert health.json()["status"] == "degraded"
        assert "full" in health.json()["degraded"]
        record = httpx.get(srv.url(f"/jobs/{job['id']}")).json()
        assert record["state"] == "exited" and record["output_bytes"] == 4 * 1024 * 1024
        # Its file lacks most of the output and the exit, so it never stands in for memory: a viewer who comes
        # after the writer's rounds (0.5 s each) still gets the job whole, to its end.
        time.sleep(2)
        replay = collect(srv.url(f"/jobs/{job['id']}/events"), timeout=30)
        assert replay[-1].type == "exit" and len(output_of(replay)) == 4 * 1024 * 1024

        # A second job on the still full disk: it runs and streams too; the warning is not repeated.
        again = httpx.post(srv.url("/jobs"), json={"argv": ["seq", "1", "20000"]}).json()
        assert output_of(collect(srv.url(f"/jobs/{again['id']}/events"), timeout=30)).endswith("20000\n")
        assert wait_until(lambda: "history is degraded" in srv.log(), 5)
        assert srv.log().count("history is degraded") == 1
        lost = re.search(r"history is degraded: .*full.*; (\d+) output bytes not kept", srv.log())
        assert lost and int(lost[1]) > 2 * 1024 * 1024
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_a_disk_already_full_at_start_is_a_clear_refusal_and_the_history_is_kept(tmp_path, small_disk):
    data = small_disk / "history"
    srv = GunicornServer(tmp_path, {"SSECMD_DATA_DIR": str(data)}).start()
    try:
        job = httpx.post(srv.url("/jobs"), json={"argv": ["echo", "kept"]}).json()
        assert output_of(collect(srv.url(f"/jobs/{job['id']}/events"), timeout=30)) == "kept\n"
    finally:
        srv.stop()
    filler = small_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)

    text = GunicornServer(tmp_path, {"SSECMD_DATA_DIR": str(data)}).refused()
    assert "cannot be opened" in text and "0 bytes free" in text and "history = false" in text, text
    assert not [p.name for p in data.iterdir() if ".damaged-" in p.name]  # a full disk is no damage

    filler.unlink()
    srv = GunicornServer(tmp_path, {"SSECMD_DATA_DIR": str(data)}).start()
    try:
        assert httpx.get(srv.url(f"/jobs/{job['id']}/output")).text == "kept\n"
    finally:
        srv.stop()
