"""app/config.py: defaults, the TOML file named by SSECMD_CONFIG, SSECMD_* overrides and validation."""

from __future__ import annotations

import dataclasses

import pytest

from app.config import DEFAULT_ALLOWED_COMMANDS, ConfigError, Settings, load_settings


@pytest.fixture
def toml_file(tmp_path):
    """Write a TOML document and return the environment that points at it."""

    def write(text: str, **env: str) -> dict[str, str]:
        path = tmp_path / "sse-commander.toml"
        path.write_text(text, encoding="utf-8")
        return {"SSECMD_CONFIG": str(path), **env}

    return write


def test_defaults_without_file_or_environment():
    settings = load_settings({})
    assert settings == Settings()
    assert settings.allowed_commands == DEFAULT_ALLOWED_COMMANDS
    assert settings.allow_any_command is False
    assert settings.env_passthrough == ()
    assert settings.heartbeat_interval == 15.0


def test_unrelated_environment_is_ignored():
    assert load_settings({"PATH": "/x", "HOME": "/root", "SSECMDX": "1", "sseCMD_WORKERS": "9"}) == Settings()


def test_load_settings_reads_os_environ_when_not_given(monkeypatch):
    monkeypatch.setenv("SSECMD_WORKERS", "3")
    monkeypatch.delenv("SSECMD_CONFIG", raising=False)
    assert load_settings().workers == 3


def test_toml_file_values_are_typed(toml_file):
    env = toml_file(
        """
bind = "0.0.0.0:9000"
workers = 4
allowed_commands = ["echo", "/opt/tools/deploy"]
allow_any_command = false
env_passthrough = ["TZ"]
default_timeout = 60
max_timeout = 120.5
log_level = "debug"

[env_set]
GREETING = "hello"
"""
    )
    settings = load_settings(env)
    assert settings.bind == "0.0.0.0:9000"
    assert settings.workers == 4
    assert settings.allowed_commands == ("echo", "/opt/tools/deploy")
    assert settings.env_passthrough == ("TZ",)
    assert settings.default_timeout == 60.0 and isinstance(settings.default_timeout, float)
    assert settings.max_timeout == 120.5
    assert settings.log_level == "debug"
    assert settings.env_set == {"GREETING": "hello"}


def test_environment_overrides_the_file(toml_file):
    env = toml_file("workers = 4\nbind = \"0.0.0.0:9000\"\n", SSECMD_WORKERS="2")
    settings = load_settings(env)
    assert settings.workers == 2
    assert settings.bind == "0.0.0.0:9000"


def test_environment_names_are_upper_case_setting_names():
    settings = load_settings({"SSECMD_MAX_RUNNING_JOBS": "5", "SSECMD_HEARTBEAT_INTERVAL": "2.5"})
    assert settings.max_running_jobs == 5
    assert settings.heartbeat_interval == 2.5


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("YES", True), (" on ", True), ("0", False), ("false", False), ("off", False),
     ("no", False), ("", False)],
)
def test_boolean_from_environment(value, expected):
    assert load_settings({"SSECMD_ALLOW_ANY_COMMAND": value}).allow_any_command is expected


@pytest.mark.parametrize("value", ["maybe", "2", "tru"])
def test_bad_boolean_from_environment(value):
    with pytest.raises(ConfigError, match="allow_any_command"):
        load_settings({"SSECMD_ALLOW_ANY_COMMAND": value})


def test_lists_from_environment_split_on_commas_and_whitespace():
    settings = load_settings({"SSECMD_ALLOWED_COMMANDS": "echo, ls  /usr/bin/date,,", "SSECMD_ENV_PASSTHROUGH": "TZ"})
    assert settings.allowed_commands == ("echo", "ls", "/usr/bin/date")
    assert settings.env_passthrough == ("TZ",)


def test_env_set_from_environment():
    settings = load_settings({"SSECMD_ENV_SET": "A=1, B=x=y,"})
    assert settings.env_set == {"A": "1", "B": "x=y"}


@pytest.mark.parametrize("value", ["A", "A=1,B", "=1"])
def test_bad_env_set_from_environment(value):
    with pytest.raises(ConfigError, match="env_set"):
        load_settings({"SSECMD_ENV_SET": value})


@pytest.mark.parametrize(
    ("name", "value"),
    [("SSECMD_WORKERS", "two"), ("SSECMD_WORKERS", "1.5"), ("SSECMD_HEARTBEAT_INTERVAL", "soon"),
     ("SSECMD_RETRY_MS", "")],
)
def test_bad_numbers_from_environment(name, value):
    with pytest.raises(ConfigError, match=name[len("SSECMD_"):].lower()):
        load_settings({name: value})


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("workers = \"4\"", "workers"),
        ("workers = 1.5", "workers"),
        ("workers = true", "workers"),
        ("heartbeat_interval = \"15\"", "heartbeat_interval"),
        ("heartbeat_interval = false", "heartbeat_interval"),
        ("allow_any_command = 1", "allow_any_command"),
        ("allow_any_command = \"true\"", "allow_any_command"),
        ("bind = 8000", "bind"),
        ("allowed_commands = \"echo\"", "allowed_commands"),
        ("allowed_commands = [\"echo\", 1]", "allowed_commands"),
        ("env_set = [\"A=1\"]", "env_set"),
        ("env_set = { A = 1 }", "env_set"),
    ],
)
def test_wrong_types_in_file_are_refused(toml_file, line, name):
    with pytest.raises(ConfigError, match=name):
        load_settings(toml_file(line + "\n"))


def test_unknown_setting_in_file_is_refused(toml_file):
    with pytest.raises(ConfigError, match="unknown setting 'wrokers'"):
        load_settings(toml_file("wrokers = 2\n"))


def test_unknown_setting_in_a_table_is_refused(toml_file):
    with pytest.raises(ConfigError, match="unknown setting 'server'"):
        load_settings(toml_file("[server]\nworkers = 2\n"))


def test_unknown_environment_setting_is_refused():
    with pytest.raises(ConfigError, match="unknown setting 'wrokers'"):
        load_settings({"SSECMD_WROKERS": "2"})


def test_the_clients_variables_are_ignored_so_one_shell_can_serve_and_use_the_client():
    client = {"SSECMD_URL": "http://127.0.0.1:9", "SSECMD_TOKEN": "t0k3n", "SSECMD_TOKEN_FILE": "/nonexistent"}
    assert load_settings(client) == Settings()
    assert load_settings({**client, "SSECMD_WORKERS": "3"}).workers == 3


@pytest.mark.parametrize("name", ["SSECMD_URLS", "SSECMD_TOKEN_PATH", "SSECMD_CLIENT_URL", "SSECMD_USER"])
def test_names_near_the_clients_variables_are_still_refused(name):
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({name: "x"})


def test_client_names_are_not_settings_in_the_file(toml_file):
    with pytest.raises(ConfigError, match="unknown setting 'url'"):
        load_settings(toml_file('url = "http://127.0.0.1:8000"\n'))


def test_invalid_toml_is_a_config_error(toml_file):
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(toml_file("workers = = 2\n"))


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({"SSECMD_CONFIG": str(tmp_path / "absent.toml")})


def test_directory_as_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({"SSECMD_CONFIG": str(tmp_path)})


def test_empty_config_variable_means_no_file():
    assert load_settings({"SSECMD_CONFIG": ""}) == Settings()


@pytest.mark.parametrize(
    "name",
    ["workers", "max_running_jobs", "default_timeout", "max_command_length", "max_argv_items", "max_body_bytes",
     "job_buffer_bytes", "max_finished_jobs", "finished_job_ttl", "heartbeat_interval", "read_chunk_bytes"],
)
@pytest.mark.parametrize("value", ["0", "-1"])
def test_settings_that_must_be_positive(name, value):
    with pytest.raises(ConfigError, match=f"{name}: must be greater than zero"):
        load_settings({f"SSECMD_{name.upper()}": value})


@pytest.mark.parametrize("name", ["max_output_bytes", "kill_grace", "retry_ms", "shutdown_retry_jitter_ms"])
def test_settings_that_may_be_zero_but_not_negative(name):
    assert getattr(load_settings({f"SSECMD_{name.upper()}": "0"}), name) == 0
    with pytest.raises(ConfigError, match=f"{name}: must not be negative"):
        load_settings({f"SSECMD_{name.upper()}": "-1"})


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error", "critical"])
def test_log_levels(level):
    assert load_settings({"SSECMD_LOG_LEVEL": level}).log_level == level


@pytest.mark.parametrize("level", ["verbose", "", "warn"])
def test_bad_log_level(level):
    with pytest.raises(ConfigError, match="log_level"):
        load_settings({"SSECMD_LOG_LEVEL": level})


def test_default_timeout_must_not_exceed_max_timeout():
    with pytest.raises(ConfigError, match="default_timeout"):
        load_settings({"SSECMD_DEFAULT_TIMEOUT": "50.5", "SSECMD_MAX_TIMEOUT": "50"})
    settings = load_settings({"SSECMD_DEFAULT_TIMEOUT": "50", "SSECMD_MAX_TIMEOUT": "50"})
    assert settings.default_timeout == settings.max_timeout == 50.0


def test_coalesce_bytes_must_be_at_least_read_chunk_bytes():
    with pytest.raises(ConfigError, match="coalesce_bytes"):
        load_settings({"SSECMD_READ_CHUNK_BYTES": "4096", "SSECMD_COALESCE_BYTES": "4095"})
    assert load_settings({"SSECMD_READ_CHUNK_BYTES": "4096", "SSECMD_COALESCE_BYTES": "4096"}).coalesce_bytes == 4096


@pytest.mark.parametrize("name", ["", "A=B", "A\0"])
def test_env_set_names_are_validated(toml_file, name):
    escaped = name.replace("\0", "\\u0000")
    with pytest.raises(ConfigError, match="env_set"):
        load_settings(toml_file(f'[env_set]\n"{escaped}" = "x"\n'))


@pytest.mark.parametrize("name", ["heartbeat_interval", "kill_grace", "default_timeout", "finished_job_ttl"])
def test_nan_is_refused(name):
    with pytest.raises(ConfigError, match=name):
        load_settings({f"SSECMD_{name.upper()}": "nan"})


def test_nan_in_file_is_refused(toml_file):
    with pytest.raises(ConfigError, match="heartbeat_interval"):
        load_settings(toml_file("heartbeat_interval = nan\n"))


def test_with_overrides_validates():
    settings = Settings()
    assert settings.with_overrides(workers=3).workers == 3
    assert settings.workers == 1  # the original is unchanged
    with pytest.raises(ConfigError, match="workers"):
        settings.with_overrides(workers=0)


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().workers = 2  # type: ignore[misc]


def test_default_env_set_is_not_shared_between_instances():
    assert Settings().env_set is not Settings().env_set
