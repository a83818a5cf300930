"""History on disk against the real server: what a restart, a graceful stop and kill -9 leave (issue 17)."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from .channel_support import publish
from .server import PYTHON, GunicornServer, helper, wait_until
from .sse_client import collect, payload

# \r, NUL, a UTF-8 character split across two writes, invalid UTF-8, stderr between.
MIXED = ["out:6f6e650d74776f0a", "out:00ff0a", "out:e282:0.05", "out:ac0a:0.05", "err:6572720a:0.05", "out:6c617374"]


def _server(tmp_path, data_dir, **kwargs) -> GunicornServer:
    return GunicornServer(tmp_path, {"SSECMD_DATA_DIR": str(data_dir), "SSECMD_HEARTBEAT_INTERVAL": "1"},
                          **kwargs).start()


def _events(srv: GunicornServer, job_id: str, last_event_id: str | None = None) -> list[tuple[str, str, str]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else None
    return [(e.last_event_id, e.type, e.data) for e in collect(srv.url(f"/jobs/{job_id}/events"), headers)]


def _wait_state(srv: GunicornServer, job_id: str, *states: str) -> dict:
    job: dict = {}

    def reached() -> bool:
        nonlocal job
        job = httpx.get(srv.url(f"/jobs/{job_id}")).json()
        return job.get("state") in states

    assert wait_until(reached, 20), job
    return job


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "history"


def test_a_finished_job_is_listed_replayed_resumed_and_downloaded_after_a_restart(tmp_path, data_dir):
    srv = _server(tmp_path, data_dir)
    try:
        job_id = httpx.post(srv.url("/jobs"), json={"argv": [PYTHON, helper("emit.py"), *MIXED]}).json()["id"]
        live = _events(srv, job_id)
        output = httpx.get(srv.url(f"/jobs/{job_id}/output")).content
        record = _wait_state(srv, job_id, "exited")
    finally:
        srv.stop()
    assert output == bytes.fromhex("6f6e650d74776f0a00ff0ae282ac0a6572720a6c617374")

    again = _server(tmp_path, data_dir)
    try:
        listed = httpx.get(again.url("/jobs")).json()["jobs"]
        assert [job["id"] for job in listed] == [job_id]
        stored = httpx.get(again.url(f"/jobs/{job_id}")).json()
        assert stored == record
        assert _events(again, job_id) == live  # same ids, same frames
        middle = live[len(live) // 2][0]
        assert _events(again, job_id, middle) == live[len(live) // 2 + 1:]
        assert httpx.get(again.url(f"/jobs/{job_id}/events"), headers={"Last-Event-ID": live[-1][0]}).status_code == 204
        download = httpx.get(again.url(f"/jobs/{job_id}/output?download=1"))
        assert download.content == output
        assert download.headers["X-Output-Dropped-Bytes"] == "0"
    finally:
        again.stop()


def test_a_graceful_stop_ends_running_jobs_as_shutdown_and_keeps_them_and_channels(tmp_path, data_dir):
    srv = _server(tmp_path, data_dir)
    try:
        ids = [publish(srv, "ops", n)["id"] for n in range(3)]
        job_id = httpx.post(srv.url("/jobs"), json={"argv": [PYTHON, helper("emit.py"), "out:6265666f72650a:60"]}
                            ).json()["id"]
        assert wait_until(lambda: httpx.get(srv.url(f"/jobs/{job_id}")).json()["output_bytes"] == 7, 10)
    finally:
        srv.stop()
    again = _server(tmp_path, data_dir)
    try:
        job = httpx.get(again.url(f"/jobs/{job_id}")).json()
        assert (job["state"], job["reason"]) == ("cancelled", "shutdown")
        assert httpx.get(again.url(f"/jobs/{job_id}/output")).content == b"before\n"
        events = _events(again, job_id)
        assert payload(_Event(events[-1]))["reason"] == "shutdown"
        # A browser resuming the channel after the restart carries on where it was.
        later = publish(again, "ops", 3)["id"]
        resumed = [e.last_event_id for e in _first(again.url("/channels/ops/events"), ids[0], 3)]
        assert resumed == [ids[1], ids[2], later]
    finally:
        again.stop()


def _first(url: str, last_event_id: str, count: int) -> list:
    from .sse_client import iter_events, open_stream

    events = []
    with open_stream(url, {"Last-Event-ID": last_event_id}, timeout=10) as response:
        for event in iter_events(response):
            events.append(event)
            if len(events) == count:
                break
    return events


class _Event:
    def __init__(self, triple: tuple[str, str, str]) -> None:
        self.last_event_id, self.type, self.data = triple


@pytest.mark.parametrize("victim", ["worker", "master"])
def test_jobs_running_when_the_server_is_killed_come_back_interrupted_with_their_output(tmp_path, data_dir, victim):
    srv = _server(tmp_path, data_dir)
    try:
        job_id = httpx.post(srv.url("/jobs"), json={"argv": [PYTHON, helper("emit.py"), "out:6265666f72650a:60"]}
                            ).json()["id"]
        job = _wait_state(srv, job_id, "running")
        assert wait_until(lambda: httpx.get(srv.url(f"/jobs/{job_id}")).json()["output_bytes"] == 7, 10)
        time.sleep(1.0)  # "at most the last second of output" may be lost; this is older than that
        workers = srv.worker_pids()
        if victim == "worker":
            os.kill(workers[0], signal.SIGKILL)
            # The master's child_exit marks the dead worker's job interrupted; a new worker serves it.
            job = _wait_state(srv, job_id, "interrupted")
            events = _events(srv, job_id)
        else:
            for pid in [srv.pid, *workers]:
                os.kill(pid, signal.SIGKILL)
            srv.proc.wait(10)
            with __import__("contextlib").suppress(ProcessLookupError):
                os.killpg(job["pid"], signal.SIGKILL)  # what systemd's KillMode=control-group would do
            srv.stop()
            srv = _server(tmp_path, data_dir)
            job = _wait_state(srv, job_id, "interrupted")
            events = _events(srv, job_id)
        assert job["reason"] == "interrupted" and job["output_bytes"] == 7
        assert httpx.get(srv.url(f"/jobs/{job_id}/output")).content == b"before\n"
        assert [kind for _, kind, _ in events] == ["start", "stdout", "exit"]
        assert payload(_Event(events[-1]))["reason"] == "interrupted"
    finally:
        srv.stop()


def test_several_workers_share_one_history_and_a_dead_workers_job_is_interrupted(tmp_path, data_dir):
    srv = _server(tmp_path, data_dir, workers=2)
    try:
        finished = [httpx.post(srv.url("/jobs"), json={"argv": ["echo", f"n{n}"]}).json()["id"] for n in range(6)]
        running = [httpx.post(srv.url("/jobs"), json={"argv": [PYTHON, helper("emit.py"), "out:6f6b0a:60"]}
                              ).json() for _ in range(4)]
        workers = srv.worker_pids()

        def listed() -> set[str]:
            return {job["id"] for job in httpx.get(srv.url("/jobs")).json()["jobs"]}

        # Whichever worker answers, it lists every job of both (jobs of the other worker: from the database).
        assert wait_until(lambda: all(listed() >= set(finished) | {j["id"] for j in running} for _ in range(4)), 10)
        owners = {job["id"]: _parent(job["pid"]) for job in running}
        assert set(owners.values()) <= set(workers)
        victim = owners[running[0]["id"]]
        os.kill(victim, signal.SIGKILL)
        for job in running:
            expected = "interrupted" if owners[job["id"]] == victim else "running"
            assert _wait_state(srv, job["id"], expected)["state"] == expected
    finally:
        srv.stop()


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])
