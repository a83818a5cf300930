"""The allowlist, argv handling and the child environment, over HTTP against the real server.

Refused programs get a 403 JSON error and start nothing; arguments are never
interpreted by a shell; children see only the configured environment.
"""

from __future__ import annotations

import os
import shlex
import uuid

import httpx
import pytest

from .server import GunicornServer
from .sse_client import collect, output_of, payload

SECRET_NAME = "COMMANDER_TEST_SECRET"
SECRET_VALUE = "s3cr3t-" + uuid.uuid4().hex
SHARED_NAME = "COMMANDER_TEST_SHARED"
SHARED_VALUE = "shared-" + uuid.uuid4().hex
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The test allowlist, with a secret in the server's environment and one passed-through variable."""
    srv = GunicornServer(
        tmp_path_factory.mktemp("allowlist"),
        {"SSECMD_ENV_PASSTHROUGH": SHARED_NAME},
        extra_env={SECRET_NAME: SECRET_VALUE, SHARED_NAME: SHARED_VALUE},
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(15, connect=5)) as c:
        yield c


def job_ids(client) -> set[str]:
    return {job["id"] for job in client.get("/jobs").json()["jobs"]}


def run_job(client, body: dict) -> tuple[dict, bytes]:
    """POST /jobs, then the job's metadata and combined output once it has ended."""
    response = client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    output = client.get(f"/jobs/{job_id}/output").content  # streams until the job ends
    return client.get(f"/jobs/{job_id}").json(), output


def assert_refused(response: httpx.Response) -> dict:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text and "<html" not in response.text.lower()
    data = response.json()
    assert data["error"] == "command_not_allowed" and data["message"], data
    assert "echo" in data["allowed"] and "rm" not in data["allowed"]
    return data


def refused_everywhere(server, client, argv: list[str]) -> None:
    """``argv`` is refused by POST /jobs (as argv and as a command line) and by GET /run, and starts nothing."""
    before = job_ids(client)
    line = shlex.join(argv)
    assert_refused(client.post("/jobs", json={"argv": argv}))
    assert_refused(client.post("/jobs", json={"command": line}))
    assert_refused(client.get("/run", params={"command": line}))
    assert job_ids(client) == before


# Refused programs.


def test_symlinks_to_allowed_and_forbidden_binaries_are_both_refused(server, client, tmp_path):
    to_allowed = tmp_path / "allowed"
    to_allowed.mkdir()
    (to_allowed / "ls").symlink_to("/usr/bin/ls")
    to_rm = tmp_path / "forbidden"
    to_rm.mkdir()
    (to_rm / "ls").symlink_to("/usr/bin/rm")
    (to_rm / "echo").symlink_to("/usr/bin/rm")
    canary = tmp_path / "canary"
    canary.write_text("still here")

    for link in (to_allowed / "ls", to_rm / "ls", to_rm / "echo"):
        refused_everywhere(server, client, [str(link), "-f", str(canary)])
    assert canary.read_text() == "still here"


# Allowed programs, and arguments that a shell would have interpreted.


def test_bare_name_ls_is_allowed_on_jobs_and_run(client, server, tmp_path):
    (tmp_path / "visible-file.txt").write_text("x")
    job, output = run_job(client, {"argv": ["ls", str(tmp_path)]})
    assert job["state"] == "exited" and job["exit_code"] == 0, job
    assert output == b"visible-file.txt\n"

    events = collect(server.url("/run?" + str(httpx.QueryParams({"command": f"ls {tmp_path}"}))))
    assert output_of(events) == "visible-file.txt\n"
    assert payload(events[-1])["code"] == 0


METACHARACTERS = ["a;b", ";", "|", "||", "&&", "&", "$(id)", "`id`", ">", "<", ">>", "*", "$HOME", "~", "!!", "\\n"]


def test_shell_metacharacters_are_plain_arguments_on_jobs_argv(client, tmp_path):
    target = tmp_path / "redirected"
    argv = ["echo", *METACHARACTERS, ">", str(target), "<", "/etc/passwd"]
    job, output = run_job(client, {"argv": argv})
    assert job["exit_code"] == 0, job
    assert output.decode() == " ".join(argv[1:]) + "\n"
    assert not target.exists()


def test_shell_metacharacters_are_plain_arguments_on_jobs_command(client, tmp_path):
    target = tmp_path / "redirected"
    line = f"echo a;b | c $(id) `id` && d || e & f > {target} < /etc/passwd * $HOME ~ '$(id)' \"`id`\""
    job, output = run_job(client, {"command": line})
    assert job["exit_code"] == 0, job
    expected = f"a;b | c $(id) `id` && d || e & f > {target} < /etc/passwd * $HOME ~ $(id) `id`\n"
    assert output.decode() == expected
    assert not target.exists()


def test_shell_metacharacters_are_plain_arguments_on_run(server, tmp_path):
    target = tmp_path / "redirected"
    line = f"echo a;b | c $(id) `id` && d > {target} < /etc/passwd * $HOME"
    events = collect(server.url("/run?" + str(httpx.QueryParams({"command": line}))))
    assert output_of(events) == f"a;b | c $(id) `id` && d > {target} < /etc/passwd * $HOME\n"
    assert payload(events[-1])["code"] == 0
    assert not target.exists()


def test_a_chained_second_command_never_runs(client, tmp_path):
    target = tmp_path / "created-by-touch"
    _, output = run_job(client, {"command": f"echo x; touch {target}"})
    assert output == f"x; touch {target}\n".encode()
    assert not target.exists()


# The child's environment.


def parse_env(output: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.decode().splitlines())


def test_env_on_jobs_sees_only_the_configured_environment(client):
    job, output = run_job(client, {"argv": ["env"]})
    assert job["exit_code"] == 0, job
    env = parse_env(output)
    assert SECRET_VALUE.encode() not in output and SECRET_NAME not in env
    assert env == {
        "PATH": CHILD_PATH,
        "LANG": "C.UTF-8",
        "HOME": "/tmp",
        "PYTHONUNBUFFERED": "1",
        SHARED_NAME: SHARED_VALUE,
    }


def test_env_on_run_sees_only_the_configured_environment(server):
    events = collect(server.url("/run?command=env"))
    text = output_of(events)
    env = parse_env(text.encode())
    assert SECRET_VALUE not in text and SECRET_NAME not in env
    assert not any(name.startswith("SSECMD_") for name in env), env
    assert env["PATH"] == CHILD_PATH and env["PYTHONUNBUFFERED"] == "1"
    assert env[SHARED_NAME] == SHARED_VALUE


def test_the_secret_really_is_in_the_server_environment(server):
    # Guards the two tests above against passing because the variable never reached the server.
    assert server.env[SECRET_NAME] == SECRET_VALUE
    assert os.environ.get(SECRET_NAME) is None


def test_env_cannot_be_set_through_the_body(client):
    before = job_ids(client)
    response = client.post("/jobs", json={"argv": ["env"], "env": {SECRET_NAME: "x"}})
    assert response.status_code == 400 and response.json()["error"] == "bad_request"
    assert job_ids(client) == before
