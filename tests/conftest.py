"""Shared fixtures: a real gunicorn -k gevent server per test module (or per test when configured).

A module marked ``pytest.mark.backends("memory", "redis")`` runs its tests that use ``server`` once per
store: the memory store, and the Redis store on the session's own redis-server (tests/redis_support.py).
"""

from __future__ import annotations

import pytest

from .server import GunicornServer


def pytest_configure(config):
    config.addinivalue_line("markers", "backends(*names): run the module's `server` tests on each store")


def pytest_generate_tests(metafunc):
    mark = metafunc.definition.get_closest_marker("backends")
    if mark is not None and "server" in metafunc.fixturenames:
        metafunc.parametrize("server", mark.args, indirect=True, scope="module")


@pytest.fixture(scope="session")
def redis_server():
    """One redis-server for the session (a unix socket in a temp dir, no persistence), stopped by pid."""
    from .redis_support import RedisServer

    srv = RedisServer().start()
    yield srv
    srv.remove()


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """A server with the test allowlist and default limits, shared by a module's tests (on the memory store,
    or on the store named by the module's ``backends`` mark)."""
    settings = {"SSECMD_HEARTBEAT_INTERVAL": "1"}
    if getattr(request, "param", "memory") == "redis":
        redis_server = request.getfixturevalue("redis_server")
        redis_server.client().flushall()  # each module starts on an empty store, as on a fresh memory store
        settings["SSECMD_STORE_URL"] = redis_server.url
    srv = GunicornServer(tmp_path_factory.mktemp("server"), settings).start()
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
