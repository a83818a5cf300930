"""Settings: built-in defaults, an optional TOML file, and environment overrides.

Pure code: nothing here touches the network or spawns anything. The file is
named by ``SSECMD_CONFIG``; every setting can also be overridden by an
environment variable ``SSECMD_<NAME>`` (upper case).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .logs import LOG_FORMATS
from .policy.access import BUILTIN_ROLES, AccessConfigError, Credential, Role, parse_credentials, parse_roles
from .policy.actions import Action, parse_actions
from .policy.forwarding import TrustedProxies
from .process.cgroups import CGROUP_SETTINGS

STORE_SCHEMES = ("redis", "rediss", "unix")  # store_url (issue 16)

ENV_PREFIX = "SSECMD_"
CONFIG_ENV = "SSECMD_CONFIG"
# SSECMD_* variables that belong to the sse-commander client (app/client), not to the server. The loader skips
# them, and only them, so that one shell can both serve and use the client; any other unknown name is an error.
CLIENT_ENV = frozenset({"SSECMD_URL", "SSECMD_TOKEN", "SSECMD_TOKEN_FILE"})

DEFAULT_ALLOWED_COMMANDS: tuple[str, ...] = (
    "echo", "printf", "ls", "date", "uptime", "df", "du", "free", "vmstat", "ping",
    "sleep", "seq", "cat", "head", "tail", "wc", "whoami", "id", "hostname",
    "uname", "true", "false", "yes",
)


class ConfigError(ValueError):
    """A setting is missing, of the wrong type, or out of range."""


@dataclass(frozen=True)
class Settings:
    """Every setting of the service, with its default."""

    # Serving (read by gunicorn's config; the command line's --bind/--workers win).
    bind: str = "127.0.0.1:8000"
    workers: int = 1
    log_level: str = "info"

    # Capacity of one worker (app/server/capacity.py): gunicorn's worker_connections is max_streams plus
    # connection_headroom, so short requests always find a free connection slot.
    max_streams: int = 12000  # open streams per worker; beyond it a new stream is refused as busy
    connection_headroom: int = 1000  # connections per worker kept for short requests above max_streams
    backlog: int = 2048  # the listen queue (gunicorn's --backlog)
    busy_retry_ms: int = 10000  # reconnection delay sent to a refused stream, plus a random extra up to as much
    body_timeout: float = 10.0  # seconds to receive a request body; 408 beyond

    # Which commands may run: names resolved on PATH at start-up, or absolute paths.
    allowed_commands: tuple[str, ...] = DEFAULT_ALLOWED_COMMANDS
    # Allow any executable on PATH. Dangerous; must be set explicitly.
    allow_any_command: bool = False

    # What children see.
    child_path: str = "/usr/local/bin:/usr/bin:/bin"
    child_lang: str = "C.UTF-8"
    child_home: str = "/tmp"
    child_cwd: str = "/tmp"
    env_passthrough: tuple[str, ...] = ()  # names copied from the server's environment
    env_set: Mapping[str, str] = field(default_factory=dict)  # fixed values

    # Limits.
    max_running_jobs: int = 32
    max_running_jobs_per_user: int = 0  # 0: a quarter of max_running_jobs (at least 1); admins are exempt
    default_timeout: float = 3600.0
    max_timeout: float = 86400.0
    max_command_length: int = 4096
    max_argv_items: int = 256
    max_body_bytes: int = 65536
    job_buffer_bytes: int = 16 * 1024 * 1024  # raw output plus encoded frames kept per job
    max_buffered_bytes: int = 1024**3  # every job's and channel's buffer together, per worker
    max_output_bytes: int = 0  # total output after which the job is killed; 0 = no limit
    max_finished_jobs: int = 200
    finished_job_ttl: float = 24 * 3600.0
    kill_grace: float = 3.0  # SIGTERM to SIGKILL

    # Streams.
    heartbeat_interval: float = 15.0
    retry_ms: int = 2000  # reconnection delay sent as the first frame
    shutdown_retry_jitter_ms: int = 3000  # extra random delay on graceful shutdown
    read_chunk_bytes: int = 65536
    coalesce_bytes: int = 262144  # one event carries at most this much output

    # Channels.
    max_channels: int = 1000
    channel_history: int = 1000  # messages kept per channel for replay
    channel_history_bytes: int = 1024 * 1024
    max_message_bytes: int = 65536
    stats_interval: float = 5.0  # seconds between messages on the "stats" channel
    max_stream_sources: int = 32  # jobs plus channels on one GET /events connection
    send_timeout: float = 30.0  # a stream stuck writing this long is dropped
    publish_rate_per_minute: int = 600  # messages per user; 0 = unlimited
    publish_rate_burst: int = 100
    max_subscriptions_per_user: int = 256  # channel subscriptions a user's open streams hold; admins are exempt

    # Where process groups are recorded so the master can kill them if a worker dies.
    run_dir: str = ""

    # History on disk (issue 17; app/store/history/): jobs' records and output survive a restart.
    history: bool = True  # false: memory only, as before
    data_dir: str = ""  # "": $XDG_STATE_HOME/sse-commander, else ~/.local/state/sse-commander
    history_max_bytes: int = 1024**3  # job output kept on disk; the oldest finished jobs go first beyond it
    history_queue_bytes: int = 64 * 1024 * 1024  # output waiting for the disk per worker; beyond it, bytes are lost

    # Who may do what. Tables in the TOML file: [[tokens]], [[users]], [roles.NAME], [actions.NAME].
    credentials: tuple[Credential, ...] = ()
    roles: Mapping[str, Role] = field(default_factory=lambda: dict(BUILTIN_ROLES))
    actions: Mapping[str, Action] = field(default_factory=dict)
    anonymous_roles: tuple[str, ...] = ("admin",)  # everyone, when no auth is configured (loopback only)
    insecure_no_auth: bool = False  # allow a non-loopback bind without auth (logged loudly)
    trusted_proxies: tuple[str, ...] = ()  # addresses/CIDRs whose user header is believed
    user_header: str = "X-Forwarded-User"
    roles_header: str = ""  # optional header with comma-separated roles from the proxy
    proxy_roles: tuple[str, ...] = ("operator",)  # roles of proxy users when no roles header is set
    session_secret: str = ""  # signs cookies and tickets; random per server start if empty
    session_ttl: float = 12 * 3600.0
    ticket_ttl: float = 600.0
    cors_allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # Host names served (DNS-rebinding guard); empty: loopback when anonymous

    # Containment of what runs.
    run_as_user: str = "nobody"  # used only when the server runs as root
    run_as_group: str = ""  # default: the user's primary group
    rlimit_cpu: int = 3600  # CPU seconds; 0 = unlimited
    rlimit_as: int = 4 * 1024**3  # address space in bytes
    rlimit_nofile: int = 1024
    rlimit_nproc: int = 512  # processes of the user the job runs as
    cgroup: str = "auto"  # a cgroup per job: "auto" (where the host allows), "required", or "off"
    job_memory_max: int = 4 * 1024**3  # memory.max of a job's cgroup (all its processes); 0 = none
    job_pids_max: int = 512  # pids.max of a job's cgroup; 0 = none
    no_new_privileges: bool = True  # PR_SET_NO_NEW_PRIVS: no set-uid or file-capability program gains anything
    child_umask: str = "022"  # octal
    rate_limit_per_minute: int = 300  # job starts per user; 0 = unlimited
    rate_limit_burst: int = 100
    login_attempts_per_minute: int = 10  # per client address; 0 = unlimited
    audit_log: str = "-"  # a file path, "-" for stderr, "" for none
    refused_log_interval: float = 10.0  # refused requests from one address: one line, then a count; 0 = every line

    # Observability (issue 19): who may scrape GET /metrics without a token with the metrics role.
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1")  # peer addresses/CIDRs (not X-Forwarded-For)
    log_format: str = "text"  # "json": access, app and audit logs as one JSON object per line
    # Input to running jobs (issue 18): "stdin": true in POST /jobs, POST /jobs/<id>/input.
    allow_stdin: bool = False  # commands may be started with a stdin pipe (named actions opt in with stdin = true)
    max_input_bytes: int = 65536  # one POST /jobs/<id>/input body
    # Scaling out (issue 16): where jobs, logs and channels are kept, and this host's name in it.
    store_url: str = ""  # "" = this worker's memory; redis://, rediss:// or unix:// = a shared Redis (Streams)
    host_name: str = field(default_factory=socket.gethostname)  # names this host's jobs in a shared store
    host_tags: tuple[str, ...] = ()  # issue 20 (fleets): tags a run may target this host by (POST /runs "tags")

    @property
    def user_job_limit(self) -> int:
        """Running jobs one (non-admin) user may have: the setting, or a quarter of max_running_jobs."""
        if self.max_running_jobs_per_user:
            return self.max_running_jobs_per_user
        return max(1, self.max_running_jobs // 4)

    @property
    def auth_configured(self) -> bool:
        """Whether any way of authenticating is configured."""
        return bool(self.credentials or self.trusted_proxies)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some settings replaced and validated."""
        return validate(dataclasses.replace(self, **changes))


def describe_store(settings: Settings) -> str:
    """The store in words, without a password: ``history <data_dir>``, ``memory``, or ``redis <url> (host ...)``."""
    if not settings.store_url:
        if settings.history:
            where = settings.data_dir or "the default data_dir"
            return f"history on disk in {where} (each worker's running jobs its own)"
        return "memory (each worker its own)"
    return f"redis {redact_store_url(settings.store_url)} (host {settings.host_name})"


def redact_store_url(url: str) -> str:
    """``store_url`` with its password (if any) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, location = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{location}"


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
# Tables parsed by their own parsers; from the environment they are given as JSON.
_TABLE_KEYS = ("tokens", "users", "roles", "actions")


def _coerce(name: str, value: Any, *, from_env: bool) -> Any:
    default = getattr(Settings(), name)
    if isinstance(default, bool):
        if from_env:
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ConfigError(f"{name}: expected a boolean, got {value!r}")
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected a boolean, got {value!r}")
        return value
    if isinstance(default, int):
        try:
            if isinstance(value, bool) or (not from_env and not isinstance(value, int)):
                raise TypeError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if isinstance(default, float):
        try:
            if isinstance(value, bool) or (not from_env and not isinstance(value, (int, float))):
                raise TypeError
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}") from None
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if from_env:
            return tuple(item for item in str(value).replace(",", " ").split() if item)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return tuple(value)
    if isinstance(default, Mapping):
        if from_env:
            pairs = [p for p in str(value).split(",") if p.strip()]
            if not all("=" in p for p in pairs):
                raise ConfigError(f"{name}: expected NAME=value pairs separated by commas")
            return dict(p.strip().split("=", 1) for p in pairs)
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(f"{name}: expected a table of strings, got {value!r}")
        return dict(value)
    raise ConfigError(f"{name}: unsupported setting type")  # pragma: no cover


def validate(settings: Settings) -> Settings:
    """Check ranges that types alone cannot express."""
    positive = (
        "workers", "max_running_jobs", "default_timeout", "max_timeout", "max_command_length",
        "max_argv_items", "max_body_bytes", "job_buffer_bytes", "max_finished_jobs",
        "finished_job_ttl", "heartbeat_interval", "read_chunk_bytes", "coalesce_bytes", "session_ttl",
        "ticket_ttl", "rate_limit_burst", "max_channels", "channel_history", "channel_history_bytes",
        "max_message_bytes", "stats_interval", "max_stream_sources", "send_timeout", "max_streams",
        "connection_headroom", "backlog", "body_timeout", "max_buffered_bytes", "publish_rate_burst",
        "max_subscriptions_per_user", "max_input_bytes",
    )
    for name in positive:
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name}: must be greater than zero")
    for name in (
        "max_output_bytes", "kill_grace", "retry_ms", "shutdown_retry_jitter_ms", "rlimit_cpu", "rlimit_as",
        "rlimit_nofile", "rlimit_nproc", "rate_limit_per_minute", "login_attempts_per_minute", "job_memory_max",
        "job_pids_max", "busy_retry_ms", "max_running_jobs_per_user", "publish_rate_per_minute",
        "refused_log_interval",
    ):
        if getattr(settings, name) < 0:
            raise ConfigError(f"{name}: must not be negative")
    for name in ("history_max_bytes", "history_queue_bytes"):  # issue 17
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name}: must be greater than zero")
    if settings.data_dir and not os.path.isabs(settings.data_dir):
        raise ConfigError(f"data_dir: must be an absolute path, got {settings.data_dir!r}")
    if settings.store_url and settings.store_url.split("://", 1)[0] not in STORE_SCHEMES:
        raise ConfigError(f"store_url: must start with {', '.join(s + '://' for s in STORE_SCHEMES)} (or be empty)")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", settings.host_name):
        raise ConfigError("host_name: 1-64 of letters, digits, '.', '_' and '-'")
    for tag in settings.host_tags:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", tag):
            raise ConfigError(f"host_tags: {tag!r} is not a tag: 1-64 of letters, digits, '.', '_' and '-'")
    if len(set(settings.host_tags)) != len(settings.host_tags):
        raise ConfigError("host_tags: a tag is given twice")
    if settings.cgroup not in CGROUP_SETTINGS:
        raise ConfigError(f"cgroup: must be one of {', '.join(CGROUP_SETTINGS)}")
    if not re.fullmatch(r"0?[0-7]{1,3}", settings.child_umask):
        raise ConfigError(f"child_umask: expected an octal mode such as 022, got {settings.child_umask!r}")
    if settings.log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format: must be one of {', '.join(LOG_FORMATS)}")
    if settings.log_level not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError("log_level: must be one of debug, info, warning, error, critical")
    if settings.default_timeout > settings.max_timeout:
        raise ConfigError("default_timeout: must not exceed max_timeout")
    if settings.coalesce_bytes < settings.read_chunk_bytes:
        raise ConfigError("coalesce_bytes: must be at least read_chunk_bytes")
    if not all(os.path.isabs(d) for d in settings.child_path.split(os.pathsep)):
        raise ConfigError("child_path: every entry must be an absolute directory")
    try:
        TrustedProxies(settings.metrics_allow, "metrics_allow")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for name in settings.env_set:
        if not name or "=" in name or "\0" in name:
            raise ConfigError(f"env_set: invalid variable name {name!r}")
    return settings


def settings_from_mapping(values: Mapping[str, Any], *, from_env: bool = False) -> dict[str, Any]:
    """Turn raw TOML or environment values into typed setting values."""
    typed: dict[str, Any] = {}
    for name, value in values.items():
        if name not in _FIELDS or name in ("credentials", "roles", "actions"):
            raise ConfigError(f"unknown setting {name!r}")
        typed[name] = _coerce(name, value, from_env=from_env)
    return typed


def _access_tables(tables: Mapping[str, Any]) -> dict[str, Any]:
    try:
        roles = parse_roles(tables.get("roles"))
        credentials = parse_credentials(tables.get("tokens"), tables.get("users"), roles)
        actions = parse_actions(tables.get("actions"))
    except AccessConfigError as exc:
        raise ConfigError(str(exc)) from None
    return {"roles": roles, "credentials": credentials, "actions": actions}


def _check_role_names(settings: Settings) -> None:
    for name in ("anonymous_roles", "proxy_roles"):
        unknown = [role for role in getattr(settings, name) if role not in settings.roles]
        if unknown:
            raise ConfigError(f"{name}: unknown role(s) {', '.join(unknown)}")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from defaults, the TOML file in SSECMD_CONFIG, then SSECMD_* variables."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    path = environ.get(CONFIG_ENV)
    if path:
        try:
            with open(path, "rb") as fh:
                document = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{CONFIG_ENV}={path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{CONFIG_ENV}={path}: invalid TOML: {exc}") from None
        tables.update({key: document.pop(key) for key in _TABLE_KEYS if key in document})
        values.update(settings_from_mapping(document))
    env_values = {
        key[len(ENV_PREFIX):].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key != CONFIG_ENV and key not in CLIENT_ENV
    }
    for key in _TABLE_KEYS:
        if key in env_values:
            try:
                tables[key] = json.loads(env_values.pop(key))
            except ValueError as exc:
                raise ConfigError(f"{ENV_PREFIX}{key.upper()}: expected JSON: {exc}") from None
    values.update(settings_from_mapping(env_values, from_env=True))
    values.update(_access_tables(tables))
    settings = validate(Settings(**values))
    _check_role_names(settings)
    return settings
