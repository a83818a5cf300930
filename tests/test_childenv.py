"""app/process/childenv.py: a command's environment is built from settings, never inherited wholesale."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.process.childenv import child_environment

SERVER_ENV = {
    "PATH": "/server/only/bin:/usr/bin",
    "HOME": "/root",
    "LANG": "en_US.UTF-8",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "DATABASE_URL": "postgres://admin:hunter2@db/prod",
    "GITHUB_TOKEN": "ghp_secret",
    "SSECMD_CONFIG": "/etc/sse-commander.toml",
    "SSECMD_ALLOW_ANY_COMMAND": "1",
    "LD_PRELOAD": "/tmp/evil.so",
    "PYTHONPATH": "/srv/app",
    "TZ": "Europe/Berlin",
}
SECRETS = ("wJalrXUtnFEMI", "hunter2", "ghp_secret", "/tmp/evil.so", "/etc/sse-commander.toml")


def test_defaults_give_only_the_fixed_variables():
    env = child_environment(Settings(), SERVER_ENV)
    assert env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "PYTHONUNBUFFERED": "1"}


def test_no_secret_reaches_the_child_by_default():
    env = child_environment(Settings(), SERVER_ENV)
    text = "\n".join(f"{k}={v}" for k, v in env.items())
    for secret in SECRETS:
        assert secret not in text
    assert not any(name.startswith("SSECMD_") for name in env)


def test_child_path_lang_and_home_come_from_settings_not_the_server():
    env = child_environment(Settings(child_path="/opt/bin", child_lang="C", child_home="/var/empty"), SERVER_ENV)
    assert (env["PATH"], env["LANG"], env["HOME"]) == ("/opt/bin", "C", "/var/empty")
    assert env["PYTHONUNBUFFERED"] == "1"


def test_passthrough_copies_only_the_named_variables_that_exist():
    env = child_environment(Settings(env_passthrough=("TZ", "NOT_SET_ANYWHERE")), SERVER_ENV)
    assert env["TZ"] == "Europe/Berlin"
    assert "NOT_SET_ANYWHERE" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env and "DATABASE_URL" not in env


def test_a_secret_passes_only_when_allowlisted():
    env = child_environment(Settings(env_passthrough=("GITHUB_TOKEN",)), SERVER_ENV)
    assert env["GITHUB_TOKEN"] == "ghp_secret"
    assert "AWS_SECRET_ACCESS_KEY" not in env


def test_passthrough_names_are_case_sensitive():
    env = child_environment(Settings(env_passthrough=("tz", "github_token")), SERVER_ENV)
    assert "tz" not in env and "TZ" not in env and "GITHUB_TOKEN" not in env


def test_env_set_adds_fixed_values():
    env = child_environment(Settings(env_set={"GREETING": "hello", "TZ": "UTC"}), SERVER_ENV)
    assert env["GREETING"] == "hello"
    assert env["TZ"] == "UTC"


def test_env_set_wins_over_passthrough():
    env = child_environment(Settings(env_passthrough=("TZ",), env_set={"TZ": "UTC"}), SERVER_ENV)
    assert env["TZ"] == "UTC"


def test_inputs_are_not_modified_and_result_is_a_fresh_dict():
    server_env = dict(SERVER_ENV)
    env_set = {"A": "1"}
    s = Settings(env_passthrough=("TZ",), env_set=env_set)
    first = child_environment(s, server_env)
    first["INJECTED"] = "x"
    assert server_env == SERVER_ENV and env_set == {"A": "1"}
    assert "INJECTED" not in child_environment(s, server_env)


NAMES = st.text(st.characters(min_codepoint=65, max_codepoint=90), min_size=1, max_size=6)


@settings(max_examples=100, deadline=None)
@given(
    server_env=st.dictionaries(NAMES, st.text(max_size=10), max_size=10),
    passthrough=st.lists(NAMES, max_size=4),
    env_set=st.dictionaries(NAMES, st.text(max_size=5), max_size=3),
)
def test_only_fixed_passthrough_and_set_names_appear(server_env, passthrough, env_set):
    env = child_environment(Settings(env_passthrough=tuple(passthrough), env_set=env_set), server_env)
    assert set(env) <= {"PATH", "LANG", "HOME", "PYTHONUNBUFFERED", *passthrough, *env_set}
    for name, value in env.items():
        if name in env_set:
            assert value == env_set[name]
        elif name in passthrough and name in server_env:
            assert value == server_env[name]
        else:
            assert name in ("PATH", "LANG", "HOME", "PYTHONUNBUFFERED")
    for name in passthrough:
        if name in server_env and name not in env_set:
            assert env[name] == server_env[name]
    if "PYTHONUNBUFFERED" not in env_set and "PYTHONUNBUFFERED" not in passthrough:
        assert env["PYTHONUNBUFFERED"] == "1"
