"""Shared fixtures: a real gunicorn -k gevent server per test module (or per test when configured)."""

from __future__ import annotations

import pytest

from .server import GunicornServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with the test allowlist and default limits, shared by a module's tests."""
    srv = GunicornServer(tmp_path_factory.mktemp("server"), {"SSECMD_HEARTBEAT_INTERVAL": "1"}).start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path):
    """Start servers with custom settings; each is stopped after the test."""
    started = []

    def make(settings=None, **kwargs) -> GunicornServer:
        srv = GunicornServer(tmp_path, settings, **kwargs).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
