"""deploy/multi-host/ (issue 16): the settings file loads, the Redis config starts a real redis-server with AOF,
and the upstream block is the one deploy/nginx.conf names."""

from __future__ import annotations

import re

from app.config import load_settings

from .redis_support import RedisServer
from .server import REPO

MULTI = REPO / "deploy" / "multi-host"


def test_the_hosts_settings_file_loads_and_names_a_redis_store():
    settings = load_settings({"SSECMD_CONFIG": str(MULTI / "sse-commander.toml")})
    assert settings.store_url.startswith("redis://") and settings.workers == 2 and settings.session_secret


def test_the_redis_config_runs_with_aof_and_a_password(tmp_path):
    srv = RedisServer(directory=tmp_path)
    srv.extra = [str(MULTI / "redis.conf")]
    srv.password = "change-me"
    srv.start()
    try:
        client = srv.client()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        srv.stop()


def test_the_upstream_block_replaces_the_one_in_deploy_nginx_conf():
    upstream = (MULTI / "nginx-upstream.conf").read_text()
    shipped = (REPO / "deploy" / "nginx.conf").read_text()
    assert re.search(r"^upstream sse_commander \{", upstream, re.MULTILINE)
    assert re.search(r"^upstream sse_commander \{", shipped, re.MULTILINE)
    assert len(re.findall(r"^\s*server\s+[\d.]+:\d+", upstream, re.MULTILINE)) == 2
