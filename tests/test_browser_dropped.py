"""The page tells the same truth as the server about output its bounded buffer dropped (issue 18, item 2).

A job writes more than `job_buffer_bytes` while someone watches it live: the page read every byte, but the server
no longer holds the start of it, so the raw download lacks it. The page says so, with the server's own figure
(the job's `dropped_bytes`, the download's `X-Output-Dropped-Bytes`), not one of its own making.
"""

from __future__ import annotations

import httpx
import pytest

from .browser_support import (  # noqa: F401 - fixtures
    Console,
    browser_fixture,
    context_fixture,
    emit_command,
    hexed,
    page_fixture,
    shot,
)
from .server import GunicornServer

LINE = "0123456789" * 5 + "\n"  # 51 bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = GunicornServer(
        tmp_path_factory.mktemp("dropped"),
        {"SSECMD_JOB_BUFFER_BYTES": str(512 * 1024), "SSECMD_HEARTBEAT_INTERVAL": "5",
         "SSECMD_HISTORY": "false"},
    ).start()
    yield srv
    srv.stop()


def _dropped_header(server, job_id: str) -> int:
    with httpx.stream("GET", server.url(f"/jobs/{job_id}/output"), timeout=10) as response:
        return int(response.headers["X-Output-Dropped-Bytes"])


def _missing_name(dropped: int) -> str:
    return f"missing-{dropped / 1024:.1f}KiB.log" if dropped < 1 << 20 else f"missing-{dropped / (1 << 20):.1f}MiB.log"


def test_the_page_shows_the_servers_dropped_bytes(page, server):
    console = Console(page, server).open()
    console.wait_live()
    # 20 writes of 2,000 lines (about 100 KB each), paced so that this page keeps up and sees every one live.
    job_id = console.run(emit_command(*[f"out:{hexed(LINE)}*2000:0.05" for _ in range(20)]))
    console.wait_for_badge("exit 0", timeout=30_000)
    job = httpx.get(server.url(f"/jobs/{job_id}"), timeout=5).json()
    dropped = _dropped_header(server, job_id)
    assert dropped == job["dropped_bytes"] > 0
    page.wait_for_function("n => document.querySelector('#term-dropped').dataset.bytes === String(n)", arg=dropped)
    assert page.is_visible("#term-dropped-box")
    shown = page.text_content("#term-dropped")
    assert shown == page.evaluate("n => window.sseCommander.formatBytes(n)", dropped)
    assert f"{shown} dropped" in page.text_content("#job-meta")
    shot(page, "console-dropped")

    # The download is byte-exact for what the server holds, and its name (the server's) says how much is missing.
    download = httpx.get(server.url(f"/jobs/{job_id}/output?download=1"), timeout=10)
    name = f"job-{job_id}-{_missing_name(dropped)}"
    assert download.headers["Content-Disposition"] == f'attachment; filename="{name}"'
    assert download.headers["X-Output-Dropped-Bytes"] == str(dropped)
    assert len(download.content) == job["output_bytes"] - dropped
    assert download.content == (LINE * 2000 * 20).encode()[dropped:]
    with page.expect_download() as info:
        page.click("#download-link")
    assert info.value.suggested_filename == name

    # Opened afresh (a replay from the start): the same figure, not the gap this viewer happened to meet.
    fresh = Console(page.context.new_page(), server).open(f"/#job={job_id}")
    fresh.wait_for_badge("exit 0")
    fresh.page.wait_for_function("n => document.querySelector('#term-dropped').dataset.bytes === String(n)",
                                 arg=dropped)


@pytest.mark.parametrize("missing, name", [
    (0, "job-ab12.log"),
    (1000, "job-ab12-missing-1000B.log"),
    (1536, "job-ab12-missing-1.5KiB.log"),
    (15_833_498, "job-ab12-missing-15.1MiB.log"),
    (3 << 30, "job-ab12-missing-3.0GiB.log"),
])
def test_the_download_name_says_how_much_is_missing(missing, name):
    from app.http.views.jobs import output_file_name

    assert output_file_name("ab12", missing) == name
