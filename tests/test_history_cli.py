"""``sse-commander history prune`` and ``history export`` against a real data directory (issue 17)."""

from __future__ import annotations

import json
import os
import subprocess

from app.config import Settings
from app.store.history import records
from app.store.history.store import HistoryStore

from .server import VENV_BIN
from .test_history_store import _on_disk, _run


def _cli(data_dir, *args: str, **settings: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "SSECMD_DATA_DIR": str(data_dir), **settings}
    return subprocess.run([str(VENV_BIN / "sse-commander"), "history", *args], capture_output=True, text=True,
                          env=env, timeout=30)


def test_export_writes_the_record_and_the_exact_output_and_prune_forgets_the_oldest(tmp_path):
    data_dir = tmp_path / "data"
    store = HistoryStore(Settings(), str(data_dir))
    try:
        ids = [_run(store, [("stdout", b"job %d\r\n\0\xff" % n)]) for n in range(3)]
        for job_id in ids:
            _on_disk(store, job_id)
    finally:
        store.close(5)

    exported = _cli(data_dir, "export", ids[1], "--to", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    record = json.loads((tmp_path / "out" / f"job-{ids[1]}.json").read_text())
    assert (record["id"], record["state"], record["owner"]) == (ids[1], "exited", "alice")
    assert (tmp_path / "out" / f"job-{ids[1]}.log").read_bytes() == b"job 1\r\n\0\xff"

    missing = _cli(data_dir, "export", "nosuchjob")
    assert missing.returncode == 1 and "no job 'nosuchjob'" in missing.stderr

    pruned = _cli(data_dir, "prune", SSECMD_MAX_FINISHED_JOBS="1")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("forgot 2 finished job(s)")
    jobs_dir = str(data_dir / "jobs")
    assert [os.path.exists(records.events_path(jobs_dir, job_id)) for job_id in ids] == [False, False, True]
    assert _cli(data_dir, "export", ids[0], "--to", str(tmp_path)).returncode == 1


def test_history_commands_say_why_they_cannot_run(tmp_path):
    off = _cli(tmp_path / "data", "prune", SSECMD_HISTORY="false")
    assert off.returncode == 2 and "history = false" in off.stderr
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "FORMAT").write_text("sse-commander-history 7\n")
    wrong = _cli(tmp_path / "data", "prune")
    assert wrong.returncode == 1 and "version 7 is not supported" in wrong.stderr and "Traceback" not in wrong.stderr
