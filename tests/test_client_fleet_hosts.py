"""The fleet client (issue 20) over three real hosts: tests/test_fleet.py's fleet (three gunicorn masters on
one redis-server, nginx in front), driven by the sse-commander CLI through nginx."""

from __future__ import annotations

import re
import shutil

import pytest

from .client_support import client, client_env
from .server import PYTHON
from .test_fleet import ADMIN, fleet  # noqa: F401 - the three hosts' fixture

pytestmark = pytest.mark.skipif(
    shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin") is None, reason="nginx is not installed")

# Five numbered lines on stdout, one on stderr, then the exit status the host's FLEET_FAIL says (web-2: 1).
SCRIPT = ("import os, sys, time\nfor n in range(5):\n    print('line', n, flush=True)\n    time.sleep(0.05)\n"
          "print('warning', file=sys.stderr, flush=True)\nsys.exit(int(os.environ['FLEET_FAIL']))")
PREFIXES = {"db-1": "db-1  | ", "web-1": "web-1 | ", "web-2": "web-2 | "}  # padded to the longest name


def _by_host(text: str) -> dict[str, list[str]]:
    """Each printed line, under the host its prefix names; fails on a line without a known prefix."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        host = next((name for name, prefix in PREFIXES.items() if line.startswith(prefix)), None)
        assert host is not None, f"a line without a host's prefix: {line!r}"
        found.setdefault(host, []).append(line[len(PREFIXES[host]):])
    return found


def test_three_hosts_print_prefixed_lines_and_one_failure_exits_1_with_the_table(fleet):  # noqa: F811
    env = client_env(fleet["proxy"].url(""), SSECMD_TOKEN=ADMIN)
    result = client(None, "run", "--tags", "web,db", "--", PYTHON, "-c", SCRIPT, env=env)
    assert result.returncode == 1, result.stderr
    assert _by_host(result.stdout.decode()) == {host: [f"line {n}" for n in range(5)] for host in PREFIXES}
    err = result.stderr.decode().splitlines()
    assert _by_host("\n".join(err[:3])) == {host: ["warning"] for host in PREFIXES}
    assert re.fullmatch(r"sse-commander: run \S+ partial: 2 of 3 hosts succeeded; not: web-2", err[3]), err
    assert err[4:] == [
        "HOST   STATE      EXIT",
        "db-1   succeeded  0",
        "web-1  succeeded  0",
        "web-2  failed     1",
    ]


def test_a_host_whose_allowlist_refuses_the_command_is_in_the_table_with_its_reason(fleet):  # noqa: F811
    env = client_env(fleet["proxy"].url(""), SSECMD_TOKEN=ADMIN)
    result = client(None, "run", "--hosts", "web-1,db-1", "--", "date", "+%Y", env=env)
    assert result.returncode == 1, result.stderr
    assert _by_host(result.stdout.decode()).keys() == {"web-1"}
    err = result.stderr.decode().splitlines()
    assert err[0].startswith("sse-commander: db-1: refused: "), err
    header, web, db = err[-3:]  # in the order given
    assert header.split() == ["HOST", "STATE", "EXIT", "REASON"]
    assert web.split() == ["web-1", "succeeded", "0"] and db.split()[:2] == ["db-1", "refused"]
    assert db[header.index("REASON"):] == err[0].removeprefix("sse-commander: db-1: refused: ")
