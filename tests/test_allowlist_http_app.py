"""The allowlist's refusals through the HTTP API, answered by the app in-process (tests/app_client.py).

The real-server tests (tests/test_allowlist_http.py) run what is allowed and check what the children see.
"""

from __future__ import annotations

import pytest

from .app_client import AppClient, app_client
from .test_allowlist_http import assert_refused, job_ids, refused_everywhere


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> AppClient:
    return app_client(tmp_path_factory.mktemp("allowlist-app"))


@pytest.fixture(scope="module")
def server(client) -> AppClient:
    return client


@pytest.mark.parametrize(
    "program",
    ["rm", "sh", "bash", "python3", "sudo", "kill", "curl", "ECHO", "echo ", " echo", "echo\t", "ls\n"],
    ids=repr,
)
def test_program_not_on_the_allowlist_is_403_json(server, client, program):
    before = job_ids(client)
    assert_refused(client.post("/jobs", json={"argv": [program, "-c", "id"]}))
    assert job_ids(client) == before


def test_disallowed_command_line_is_403_json_on_run_and_jobs(server, client, tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("still here")
    refused_everywhere(server, client, ["rm", "-f", str(canary)])
    refused_everywhere(server, client, ["sh", "-c", f"rm -f {canary}"])
    assert canary.read_text() == "still here"


@pytest.mark.parametrize(
    "program",
    [
        "../../bin/rm",
        "../../usr/bin/ls",
        "./ls",
        "ls/",
        "bin/ls",
        "/bin/../bin/rm",
        "/usr/bin/../bin/ls",
        "/usr/./bin/ls",
        "/usr//bin/ls",
        "//usr/bin/ls",
        "/usr/bin/ls/",
        "/usr/bin/rm",
        "/bin/rm",
        "/bin/ls",  # the same file as the allowed /usr/bin/ls, reached through the /bin symlink
        "/usr/bin/env/../rm",
        "/tmp/ls",
    ],
)
def test_path_tricks_in_argv0_are_403_json(server, client, program, tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("still here")
    refused_everywhere(server, client, [program, "-f", str(canary)])
    assert canary.exists()


