"""GET /metrics on a real gunicorn with two workers: jobs of every final state, checked by Debian's promtool.

promtool comes from Debian's prometheus package, unpacked (not installed) by `make test-deps` into
.cache/prometheus; SSECMD_TEST_PROMTOOL names another copy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .auth_support import Credentials, bearer
from .server import PYTHON, REPO, TEST_ALLOWED, GunicornServer, wait_until

PROMTOOL = os.environ.get("SSECMD_TEST_PROMTOOL") or str(REPO / ".cache" / "prometheus" / "usr" / "bin" / "promtool")
needs_promtool = pytest.mark.skipif(
    not os.access(PROMTOOL, os.X_OK), reason=f"no promtool at {PROMTOOL} (make test-deps unpacks Debian's)"
)
CREDS = Credentials()
SCRAPER = CREDS.add_token("prometheus", ["metrics"])
ALICE = CREDS.add_token("alice", ["operator"])
KILL_ITSELF = [PYTHON, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run promtool; its output as text."""
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, timeout=60)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(scrape: dict, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, these), value in scrape.items() if sample == name and wanted <= set(these))


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    not_executable = tmp / "plain-file"
    not_executable.write_text("not a program")
    settings = {
        **CREDS.env(),
        "SSECMD_ALLOWED_COMMANDS": f"{TEST_ALLOWED} {not_executable}",
        "SSECMD_MAX_OUTPUT_BYTES": "1000000",
        "SSECMD_JOB_BUFFER_BYTES": "65536",  # seq 100000 (589 kB) overflows it: dropped bytes, then a gap
        # Memory only: with history, a finished job on disk is whole (dropped_bytes 0, no gap) once it has left
        # memory, which on a loaded machine happened before the test read it.
        "SSECMD_HISTORY": "false",
        # Only the metrics role may scrape: the tests' loopback peer is not in the list.
        "SSECMD_METRICS_ALLOW": "192.0.2.0/24",
    }
    server = GunicornServer(tmp, settings, workers=2).start()
    server.not_executable = str(not_executable)
    yield server
    server.stop()


def clients_per_worker(server: GunicornServer, attempts: int = 80) -> dict[int, httpx.Client]:
    """One keep-alive client connected to each worker (the memory store keeps a job in its worker)."""
    found: dict[int, httpx.Client] = {}
    workers = len(server.worker_pids())
    for _ in range(attempts):
        client = httpx.Client(base_url=server.base_url, headers=bearer(ALICE), timeout=15)
        pid = client.get("/healthz").json()["worker_pid"]
        if pid in found:
            client.close()
        else:
            found[pid] = client
        if len(found) == workers:
            return found
    raise AssertionError(f"connections reached only workers {sorted(found)} of {workers}")


def scrape(client: httpx.Client) -> str:
    response = client.get("/metrics", headers=bearer(SCRAPER))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def finish(client: httpx.Client, job: dict) -> dict:
    state: dict = {}

    def ended() -> bool:
        state.update(client.get(f"/jobs/{job['id']}").json())
        return state.get("ended_at") is not None

    assert wait_until(ended, 20), state
    return state


def start(client: httpx.Client, body: dict) -> dict:
    response = client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


@needs_promtool
def test_a_scrape_after_jobs_of_every_state_passes_promtool_and_adds_up_the_workers(srv):
    clients = list(clients_per_worker(srv).values())
    bodies = [
        ({"argv": ["echo", "hello"]}, "exited", "exited"),
        ({"argv": ["false"]}, "exited", "exited"),  # a failed exit code is still "exited", with code 1
        ({"argv": KILL_ITSELF}, "killed", "killed"),
        ({"argv": ["sleep", "30"], "timeout": 0.5}, "timed_out", "timeout"),
        ({"argv": [srv.not_executable]}, "failed_to_start", "not_executable"),
        ({"argv": ["yes"]}, "killed", "output_limit"),
        ({"argv": ["sleep", "30"]}, "cancelled", "cancelled"),
        ({"argv": ["seq", "100000"]}, "exited", "exited"),
    ]
    before = samples(scrape(clients[0]))
    outcomes = []
    for number, (body, state, reason) in enumerate(bodies):
        client = clients[number % len(clients)]  # every worker runs some of them
        job = start(client, body)
        if reason == "cancelled":
            assert client.delete(f"/jobs/{job['id']}").json()["state"] == "cancelled"
        ended = finish(client, job)
        assert (ended["state"], ended["reason"]) == (state, reason), ended
        outcomes.append((state, reason))

    overflowed = finish(client, job)
    assert overflowed["dropped_bytes"] > 0
    replay = client.get(f"/jobs/{job['id']}/events").text  # from the start: a gap where the dropped part was
    missed = sum(json.loads(line[len("data: "):])["missed_bytes"]
                 for line in replay.splitlines() if line.startswith("data: {\"missed_bytes\""))
    assert missed > 0

    texts = [scrape(client) for client in clients]
    checked = promtool("check", "metrics", stdin=texts[0].encode())
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    scrapes = [samples(text) for text in texts]
    for after in scrapes:  # any worker answers for all of them
        started = total(after, "ssecmd_jobs_started_total") - total(before, "ssecmd_jobs_started_total")
        assert started == len(bodies)
        for state, reason in set(outcomes):
            finished = total(after, "ssecmd_jobs_finished_total", state=state, reason=reason)
            assert finished - total(before, "ssecmd_jobs_finished_total", state=state, reason=reason) == \
                outcomes.count((state, reason)), (state, reason)
        assert total(after, "ssecmd_jobs_running") == 0
        assert total(after, "ssecmd_job_duration_seconds_count") - total(
            before, "ssecmd_job_duration_seconds_count") == len(bodies) - 1  # failed_to_start never ran
        assert total(after, "ssecmd_job_spawn_latency_seconds_count") - total(
            before, "ssecmd_job_spawn_latency_seconds_count") == len(bodies) - 1
        assert total(after, "ssecmd_job_output_bytes_total") - total(before, "ssecmd_job_output_bytes_total") \
            >= 1000000 + len("hello\n") + overflowed["output_bytes"]
        dropped = total(after, "ssecmd_job_output_dropped_bytes_total") - total(
            before, "ssecmd_job_output_dropped_bytes_total")
        assert dropped >= overflowed["dropped_bytes"]
        assert total(after, "ssecmd_stream_gap_bytes_total") - total(before, "ssecmd_stream_gap_bytes_total") == missed
        assert ("ssecmd_streams_open", (("kind", "channel"),)) in after
    for client in clients:
        client.close()


@needs_promtool
def test_the_example_alert_rules_in_the_readme_pass_promtool(tmp_path):
    readme = (REPO / "README.md").read_text()
    rules = readme.split("<!-- alert-rules: checked by tests/test_metrics.py -->", 1)[1]
    rules = rules.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "rules.yml"
    path.write_text(rules)
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert checked.stdout.decode().count("SUCCESS: 3 rules found") == 1


def test_open_streams_and_subscribers_are_gauges_over_every_worker(srv):
    clients = list(clients_per_worker(srv).values())
    with httpx.stream("GET", srv.url("/channels/news/events"), headers=bearer(ALICE), timeout=15) as stream:
        chunks = stream.iter_bytes()  # kept: dropping it would close the connection
        assert next(chunks).endswith(b": connected\n\n")
        for client in clients:  # the worker holding the stream, and the other one
            scraped = samples(scrape(client))
            assert total(scraped, "ssecmd_streams_open", kind="channel") == 1
            assert total(scraped, "ssecmd_channel_subscribers") == 1
    assert wait_until(lambda: total(samples(scrape(clients[0])), "ssecmd_streams_open") == 0, 10)
    assert total(samples(scrape(clients[0])), "ssecmd_channel_subscribers") == 0
    for client in clients:
        client.close()


def test_a_dead_workers_running_jobs_leave_the_gauge_and_its_counts_stay(srv):
    clients = clients_per_worker(srv)
    (victim, doomed), (_, survivor) = list(clients.items())[:2]
    start(doomed, {"argv": ["sleep", "60"]})
    scraped = samples(scrape(survivor))  # another worker counts the victim's running job
    assert total(scraped, "ssecmd_jobs_running") == 1
    started = total(scraped, "ssecmd_jobs_started_total")
    doomed.close()
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: victim not in srv.worker_pids() and len(srv.worker_pids()) == 2, 20)
    after = samples(scrape(survivor))
    assert total(after, "ssecmd_jobs_running") == 0  # child_exit: mark_process_dead
    assert total(after, "ssecmd_jobs_started_total") == started  # counters of dead workers are kept
    files = {path.name for path in Path(metrics_dir(srv)).iterdir()}
    assert f"gauge_livesum_{victim}.db" not in files and f"counter_{victim}.db" in files
    survivor.close()


def metrics_dir(server: GunicornServer) -> str:
    """The master's metrics directory: <run_dir>/metrics/<master pid>."""
    return str(server.run_dir / "metrics" / str(server.pid))


def test_the_metrics_directory_is_wiped_at_start_and_removed_at_exit(make_server, tmp_path):
    stale = tmp_path / "run" / "metrics" / "999999999"  # a master that is gone
    stale.mkdir(parents=True, mode=0o700)
    (stale / "counter_1.db").write_bytes(b"x")
    os.chmod(tmp_path / "run", 0o700)
    os.chmod(tmp_path / "run" / "metrics", 0o700)
    server = make_server()
    assert not stale.exists()
    path = metrics_dir(server)
    assert os.path.isdir(path)
    server.stop()
    assert not os.path.exists(path)


def test_the_master_does_not_import_prometheus_client_before_forking():
    # Imported before PROMETHEUS_MULTIPROC_DIR is set, it would hand every worker single-process values.
    code = "import app.server.gunicorn_conf, app.server.metrics_dir, sys; print('prometheus_client' in sys.modules)"
    env = {"PATH": "/usr/bin:/bin", "SSECMD_RUN_DIR": "/tmp"}
    result = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert result.stdout.strip() == "False", result.stderr
