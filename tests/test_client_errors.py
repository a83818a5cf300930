"""The client's connection, token and errors: one line each, exit 255, never a traceback."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest

from .auth_support import Credentials
from .client_support import CLIENT, client, client_env
from .server import GunicornServer, free_port


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A server with tokens: alice is an admin, rita a runner (named actions only)."""
    creds = Credentials()
    creds.add_token("alice", ["admin"])
    creds.add_token("rita", ["runner"])
    actions = {"hello": {"argv": ["echo", "hello"]}}
    srv = GunicornServer(tmp_path_factory.mktemp("auth"), {**creds.env(), "SSECMD_ACTIONS": json.dumps(actions),
                                                           "SSECMD_ROLES": json.dumps({"runner": {"actions": []}})})
    srv.start()
    srv.creds = creds
    yield srv
    srv.stop()


def _one_line(result: subprocess.CompletedProcess) -> str:
    """The client's whole stderr, which must be exactly one line."""
    text = result.stderr.decode()
    assert text.count("\n") == 1 and text.endswith("\n"), text
    return text.strip()


def test_connection_refused_is_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["jobs"], ["run", "--", "true"], ["attach", "0123456789abcdef"], ["tail", "ops"], ["actions"],
                 ["runs"]):
        result = client(url, *args)
        assert result.returncode == 255
        assert _one_line(result) == (
            f"sse-commander: cannot connect to {url}: connection refused (is the server running? see --url)"
        )


def test_401_without_a_token_and_with_a_wrong_one(auth_server):
    without = client(auth_server, "jobs")
    assert without.returncode == 255
    assert _one_line(without).startswith(
        "sse-commander: not authenticated: the server wants a token: set SSECMD_TOKEN or pass --token-file"
    )
    wrong = client(auth_server, "jobs", env=client_env(auth_server, SSECMD_TOKEN="ssecmd_wrong"))
    assert wrong.returncode == 255
    assert _one_line(wrong) == (
        "sse-commander: not authenticated: the server refused the token from SSECMD_TOKEN or --token-file "
        "(unknown or revoked token) (401)"
    )


def test_the_token_comes_from_the_environment_or_a_private_file(auth_server, tmp_path):
    token = auth_server.creds.tokens["alice"]
    by_env = client(auth_server, "run", "--", "echo", "hi", env=client_env(auth_server, SSECMD_TOKEN=token))
    assert by_env.returncode == 0 and by_env.stdout == b"hi\n"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    by_file = client(auth_server, "run", "--token-file", str(token_file), "--", "echo", "file")
    assert by_file.stdout == b"file\n"
    by_file_env = client(auth_server, "jobs", env=client_env(auth_server, SSECMD_TOKEN_FILE=str(token_file)))
    assert by_file_env.returncode == 0 and b"echo file" in client(
        auth_server, "jobs", "--all", "--token-file", str(token_file)).stdout
    # A file others can read is refused, as ssh refuses such a private key.
    token_file.chmod(0o644)
    exposed = client(auth_server, "jobs", "--token-file", str(token_file))
    assert exposed.returncode == 255
    assert _one_line(exposed) == (
        f"sse-commander: token file {token_file} is open to other users (mode 0644); "
        f"fix with: chmod 600 {token_file}"
    )
    missing = client(auth_server, "jobs", "--token-file", str(tmp_path / "absent"))
    assert missing.returncode == 255 and "No such file" in _one_line(missing)


def test_there_is_no_way_to_give_the_token_as_an_argument(auth_server):
    token = auth_server.creds.tokens["alice"]
    for option in ("--token", "-t", "--token-value"):
        result = client(auth_server, "jobs", option, token)
        assert result.returncode == 255 and b"No such option" in result.stderr


def test_403_names_what_is_not_allowed(auth_server):
    rita = client_env(auth_server, SSECMD_TOKEN=auth_server.creds.tokens["rita"])
    alice = client_env(auth_server, SSECMD_TOKEN=auth_server.creds.tokens["alice"])
    command = client(auth_server, "run", "--", "ls", "/", env=rita)
    assert command.returncode == 255
    assert _one_line(command) == "sse-commander: forbidden: rita may not run 'ls' (403)"
    action = client(auth_server, "run", "--action", "hello", env=rita)
    assert _one_line(action) == "sse-commander: forbidden: rita may not run action 'hello' (403)"
    publish = client(auth_server, "publish", "jobs", "hi", env=alice)
    assert _one_line(publish) == "sse-commander: forbidden: alice may not publish to 'jobs' (403)"
    not_allowed = client(auth_server, "run", "--", "rm", "-rf", "/tmp/x", env=alice)
    assert _one_line(not_allowed).startswith("sse-commander: forbidden: command 'rm' is not allowed (allowed: cat ")


def test_runs_lists_a_users_own_runs_and_everyones_for_an_admin(auth_server):
    rita = client_env(auth_server, SSECMD_TOKEN=auth_server.creds.tokens["rita"])
    alice = client_env(auth_server, SSECMD_TOKEN=auth_server.creds.tokens["alice"])
    host = client(auth_server, "hosts", env=alice).stdout.decode().splitlines()[1].split()[0]
    started = client(auth_server, "run", "--detach", "--hosts", host, "--", "echo", "fleet", env=alice)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.decode().strip()
    listed = client(auth_server, "runs", env=alice).stdout.decode().splitlines()
    cells = listed[1].split()  # ID STATE n/1 ok USER date time COMMAND...
    assert (cells[0], cells[4], cells[-2:]) == (run_id, "alice", ["echo", "fleet"]), listed
    theirs = client(auth_server, "runs", env=rita)  # a runner sees her own runs: none
    assert theirs.returncode == 0 and theirs.stdout.decode().splitlines() == [
        "ID  STATE  HOSTS  USER  CREATED  COMMAND"]
    without = client(auth_server, "runs")
    assert without.returncode == 255 and _one_line(without).startswith("sse-commander: not authenticated: ")


def test_404_for_an_unknown_job(server):
    for command in ("attach", "logs", "cancel"):
        result = client(server, command, "0123456789abcdef")
        assert result.returncode == 255
        assert _one_line(result) == "sse-commander: not found: no job with id '0123456789abcdef' (404)"


def test_429_is_final_without_wait_and_waited_out_with_it(make_server):
    srv = make_server({"SSECMD_MAX_RUNNING_JOBS": "1"})
    busy = client(srv, "run", "--detach", "--", "sleep", "3").stdout.decode().strip()
    refused = client(srv, "run", "--", "echo", "late")
    assert refused.returncode == 255
    assert _one_line(refused) == (
        "sse-commander: too many requests: 1 jobs are already running; try again later; "
        "the server says retry in 5 s; pass --wait to wait for it (429)"
    )
    started = time.monotonic()
    waited = client(srv, "run", "--wait", "--", "echo", "late")
    assert waited.returncode == 0 and waited.stdout == b"late\n"
    assert time.monotonic() - started >= 4
    assert b"1 jobs are already running; try again later; waiting 5 s" in waited.stderr
    assert httpx.get(srv.url(f"/jobs/{busy}")).json()["state"] == "exited"


def test_one_shell_can_serve_and_use_the_client(tmp_path):
    """The server ignores the client's SSECMD_* variables; every other unknown one still stops it."""
    creds = Credentials()
    token = creds.add_token("alice", ["admin"])
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    shell = {"SSECMD_TOKEN": token, "SSECMD_TOKEN_FILE": str(token_file)}
    srv = GunicornServer(tmp_path, creds.env(), extra_env=shell)
    shell["SSECMD_URL"] = srv.base_url
    srv.env["SSECMD_URL"] = srv.base_url
    srv.start()
    try:
        result = client(srv, "run", "--", "echo", "same shell", env={**srv.env})
        assert result.returncode == 0 and result.stdout == b"same shell\n"
        settings = subprocess.run([CLIENT, "settings"], env=srv.env, capture_output=True, timeout=30)
        assert settings.returncode == 0, settings.stderr
    finally:
        srv.stop()
    typo = GunicornServer(tmp_path, {**creds.env(), "SSECMD_TOKN": token})
    assert "unknown setting 'tokn'" in typo.refused()


def test_usage_errors_exit_255_for_client_commands_and_2_for_server_commands(server):
    for args in (["run"], ["run", "--timeout", "soon", "--", "true"], ["attach"], ["jobs", "--bogus"],
                 ["run", "--action", "x", "novalue"], ["tail"]):
        result = client(server, *args)
        assert result.returncode == 255, (args, result.stderr)
        assert b"Usage: sse-commander" in result.stderr
    assert client(None, "token").returncode == 2
    assert client(None, "nonsense").returncode == 2


def test_a_bad_url_is_one_line(server):
    result = client(None, "jobs", "--url", "ftp://example.org")
    assert result.returncode == 255
    assert _one_line(result) == (
        "sse-commander: --url 'ftp://example.org': expected http://HOST[:PORT][/PATH] or https://..."
    )
