"""schemathesis against the real server: no 5xx, and every answer as GET /openapi.json documents it.

The CLI (`st run`) reads the contract from a real gunicorn -k gevent server and sends generated requests
to every operation: the documented examples, the coverage phase (boundary and invalid values of every
parameter and body), bounded random fuzzing, and the stateful phase, which follows the contract's links
(POST /jobs -> its events, output, ticket, cancel), so finished jobs' event streams are read whole and
each event is checked against the documented event shapes.

Twice: with authentication on (a token), and on the shipped default (none, loopback only).
Bounded and repeatable: a fixed seed, no example database, a fixed number of examples per operation, one
worker (hypothesis's reflection is not thread-safe on 3.11), a hard time limit. The server's allowlist is
only `true` and `echo`, so whatever the fuzzer starts is harmless. Not fuzzed: the two streams that never
end by themselves (a channel's, and GET /events, which carries channels), since schemathesis reads a whole
body before checking it; tests/test_openapi_streams.py checks their events against the contract.
Not checked: positive_data_acceptance (a request the schema allows may still be refused: the allowlist,
the named actions and the limits are this server's configuration, which the contract gives in words);
every other check schemathesis has runs (status codes, content types, headers, response and event
schemas, negative data rejected with a 4xx, 405s with Allow, ignored auth).
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from app.http.openapi import document
from app.policy.access import hash_token, new_token

from .server import VENV_BIN, GunicornServer

TOKEN = new_token()
SEED = 19
EXAMPLES_PER_OPERATION = 25
TIME_LIMIT = 90  # seconds; the run takes about 15 s on a quiet 2-core machine
ENDLESS_STREAMS = ("subscribe", "multiplexed")  # operationIds


def documented_operations() -> int:
    """How many operations the contract has."""
    return sum(method != "parameters" for item in document()["paths"].values() for method in item)


@pytest.fixture(scope="module", params=["token", "anonymous"])
def fuzz_server(request, tmp_path_factory):
    """A server with a harmless allowlist: with authentication on (an admin token), or on the shipped
    default (no authentication: everyone on loopback is the anonymous admin)."""
    settings = {"SSECMD_ALLOWED_COMMANDS": "true echo", "SSECMD_LOG_LEVEL": "info"}
    if request.param == "token":
        settings["SSECMD_TOKENS"] = json.dumps([{"user": "fuzzer", "roles": ["admin"], "hash": hash_token(TOKEN)}])
    srv = GunicornServer(tmp_path_factory.mktemp("openapi-fuzz"), settings).start()
    srv.mode = request.param
    yield srv
    srv.stop()


def test_the_server_keeps_its_contract_under_fuzzing(fuzz_server, tmp_path):
    token = fuzz_server.mode == "token"
    command = [
        str(VENV_BIN / "st"), "run", fuzz_server.url("/openapi.json"),
        *(("--header", f"Authorization: Bearer {TOKEN}") if token else ()),
        "--seed", str(SEED), "--generation-database", "none",
        "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--workers", "1", "--request-timeout", "10",
        *(arg for operation in ENDLESS_STREAMS for arg in ("--exclude-operation-id", operation)),
        # Without authentication configured, everything is open to loopback by design: ignored_auth would
        # report just that.
        "--exclude-checks", "positive_data_acceptance" if token else "positive_data_acceptance,ignored_auth",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=TIME_LIMIT,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_COLOR": "1", "COLUMNS": "120"})
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    # Every operation but the endless streams, and GET /openapi.json itself (st leaves out the document it
    # loaded; tests/test_openapi_app.py checks that one).
    selected = int(re.search(r"Selected: (\d+)/", report)[1])
    tested = int(re.search(r"Tested: (\d+)", report)[1])
    assert selected == tested == documented_operations() - len(ENDLESS_STREAMS) - 1, report
    log = fuzz_server.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-5000:]
