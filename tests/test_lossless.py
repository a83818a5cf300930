"""Every byte a command writes reaches an EventSource client unchanged, and /output byte-exact."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import connect_sse

from .server import PYTHON, helper
from .sse_client import collect, output_of

# Also on the Redis store (issue 16): the same behaviour, whichever store holds the logs.
pytestmark = pytest.mark.backends("memory", "redis")

CASES = {
    "carriage_return_progress": [b"10%\r20%\r30%\n"],
    "crlf_and_lone_lf": [b"one\r\ntwo\nthree\r\n\r\n"],
    "nul_and_ansi": [b"\x00nul\x00 \x1b[31mred\x1b[0m \x1b[1mbold\x1b[0m\n"],
    "megabyte_line_without_newline": [(b"x", 1024 * 1024)],
    "utf8_split_across_reads": [b"price: \xe2\x82", b"\xac and \xf0\x9f", b"\x98\x80 done"],
    "trailing_cr": [b"spinner |\r", b"spinner /\r"],
    "separators_and_unicode_line_breaks": [b"a\x0bb\x0cc\x1c\xc2\x85\xe2\x80\xa8z"],
}


def _expand(parts) -> list[bytes]:
    return [part[0] * part[1] if isinstance(part, tuple) else part for part in parts]


def _emit_command(parts) -> str:
    # A pause between parts makes each arrive in its own read.
    specs = [f"{p[0].hex()}*{p[1]}" if isinstance(p, tuple) else p.hex() for p in parts]
    args = " ".join(f"out:{spec}:0.2" for spec in specs)
    return f"{PYTHON} {helper('emit.py')} {args}"


def _start_job(server, command: str) -> dict:
    response = httpx.post(server.url("/jobs"), json={"command": command})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_through_spec_parser(server, case):
    parts = CASES[case]
    job = _start_job(server, _emit_command(parts))
    events = collect(server.url(job["urls"]["events"]))
    assert output_of(events, "stdout") == b"".join(_expand(parts)).decode("utf-8")
    assert events[-1].type == "exit"


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_through_httpx_sse(server, case):
    parts = CASES[case]
    job = _start_job(server, _emit_command(parts))
    received = []
    with httpx.Client(timeout=30) as client, connect_sse(client, "GET", server.url(job["urls"]["events"])) as source:
        for sse in source.iter_sse():
            if sse.event == "stdout":
                received.append(sse.json()["out"])
            if sse.event == "exit":
                break
    assert "".join(received) == b"".join(_expand(parts)).decode("utf-8")


def test_invalid_utf8_becomes_replacement_in_events_and_stays_exact_in_output(server):
    parts = [b"ok \xff\xfe bad \xc3(", b" end\xe2\x82"]
    job = _start_job(server, _emit_command(parts))
    events = collect(server.url(job["urls"]["events"]))
    assert output_of(events, "stdout") == b"".join(parts).decode("utf-8", errors="replace")
    raw = httpx.get(server.url(job["urls"]["output"]), timeout=30).content
    assert raw == b"".join(parts)


def test_output_is_combined_and_byte_exact_while_streaming(server):
    command = f"{PYTHON} {helper('emit.py')} out:6f7574310a:0.3 err:6572720a:0.3 out:00ff0d0a"
    job = _start_job(server, command)
    with httpx.Client(timeout=30) as client, client.stream("GET", server.url(job["urls"]["output"])) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        body = b"".join(response.iter_raw())
    assert body == b"out1\nerr\n\x00\xff\r\n"


def test_stdout_and_stderr_are_told_apart(server):
    command = f"{PYTHON} {helper('emit.py')} out:6f0a:0.2 err:650a:0.2 out:6f320a"
    events = collect(server.url("/run?command=" + command.replace(" ", "%20")))
    assert output_of(events, "stdout") == "o\no2\n"
    assert output_of(events, "stderr") == "e\n"
