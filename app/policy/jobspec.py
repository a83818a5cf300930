"""Validated job requests and resume cursors: pure parsing, no I/O."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from .actions import InvalidParameter
from .commandline import InvalidCommand, parse_command, validate_argv

# Plain ASCII numbers only: float() would also take "1_000", " 12 " and non-ASCII digits.
_DECIMAL = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,4})?", re.ASCII)


class InvalidRequest(ValueError):
    """A request field is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class JobSpec:
    """What to run, as accepted from a client."""

    argv: tuple[str, ...]
    timeout: float
    action: str | None = None  # set when argv was rendered from a named action
    params: dict[str, Any] | None = None
    stderr: str = "separate"  # or "merged": stderr on the stdout pipe, in exact order
    stdin: bool = False  # a stdin pipe that takes input (POST /jobs/<id>/input)


STDERR_MODES = ("separate", "merged")


def parse_stderr_mode(value: Any, default: str = "separate") -> str:
    """The ``stderr`` option: ``separate`` (two pipes) or ``merged`` (one pipe, exact order); None: ``default``."""
    if value is None:
        return default
    if value not in STDERR_MODES:
        raise InvalidRequest('stderr must be "separate" or "merged"')
    return value


def parse_timeout(value: Any, settings: Settings) -> float:
    """A timeout in seconds within (0, max_timeout]; None means the default."""
    if value is None:
        return settings.default_timeout
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest("timeout must be a number of seconds")
    if value <= 0:
        raise InvalidRequest("timeout must be greater than zero")
    if value > settings.max_timeout:
        raise InvalidRequest(f"timeout must not exceed {settings.max_timeout:g} seconds")
    return float(value)


def parse_job_request(payload: Any, settings: Settings) -> JobSpec:
    """Validate a POST /jobs body: command (string), argv (list) or action (+ params, confirm); optional timeout."""
    if not isinstance(payload, dict):
        raise InvalidRequest("body must be a JSON object")
    unknown = set(payload) - {"command", "argv", "action", "params", "timeout", "confirm", "stderr", "stdin"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    given = [key for key in ("command", "argv", "action") if key in payload]
    if len(given) != 1:
        raise InvalidRequest(
            "give exactly one of 'command' (a string), 'argv' (a list of strings) or 'action' (a name, with 'params')"
        )
    if "params" in payload and "action" not in payload:
        raise InvalidRequest("'params' goes with 'action'")
    if not isinstance(payload.get("confirm", False), bool):
        raise InvalidRequest("confirm must be true or false")
    if not isinstance(payload.get("stdin", False), bool):
        raise InvalidRequest("stdin must be true or false")
    if "action" in payload:
        return _action_spec(payload, settings)
    try:
        if "command" in payload:
            argv = parse_command(
                payload["command"],
                max_length=settings.max_command_length,
                max_items=settings.max_argv_items,
            )
        else:
            argv = validate_argv(
                payload["argv"],
                max_length=settings.max_command_length,
                max_items=settings.max_argv_items,
            )
    except InvalidCommand as exc:
        raise InvalidRequest(str(exc)) from None
    return JobSpec(
        argv=tuple(argv),
        timeout=parse_timeout(payload.get("timeout"), settings),
        stderr=parse_stderr_mode(payload.get("stderr")),
        stdin=_stdin(payload, settings.allow_stdin, "this server does not take input to commands (allow_stdin)"),
    )


def _action_spec(payload: dict[str, Any], settings: Settings) -> JobSpec:
    name = payload["action"]
    if not isinstance(name, str):
        raise InvalidRequest("action must be a string")
    action = settings.actions.get(name)
    if action is None:
        raise InvalidRequest(f"unknown action {name!r}")
    params = payload.get("params")
    try:
        argv = action.render(params)
    except InvalidParameter as exc:
        raise InvalidRequest(str(exc)) from None
    if action.confirm and payload.get("confirm") is not True:
        raise InvalidRequest(f'action {name!r} must be confirmed: send "confirm": true')
    # An absent or null timeout is the action's own: null must not mean the (larger) server default.
    timeout = payload.get("timeout")
    if timeout is None:
        timeout = action.timeout
    if action.timeout is not None and isinstance(timeout, (int, float)) and timeout > action.timeout:
        raise InvalidRequest(f"timeout must not exceed this action's {action.timeout:g} seconds")
    return JobSpec(
        argv=tuple(argv),
        timeout=parse_timeout(timeout, settings),
        action=name,
        params=dict(params or {}),
        stderr=parse_stderr_mode(payload.get("stderr"), action.stderr),
        stdin=_stdin(
            payload, settings.allow_stdin or action.stdin, f"action {name!r} takes no input (stdin)", action.stdin
        ),
    )


def _stdin(payload: dict[str, Any], allowed: bool, refusal: str, default: bool = False) -> bool:
    """The request's ``stdin`` (a stdin pipe; absent: ``default``), refused where not allowed."""
    wanted = payload.get("stdin", default)
    if wanted and not allowed:
        raise InvalidRequest(refusal)
    return wanted


def parse_command_query(command: Any, timeout: Any, settings: Settings, stderr: Any = None) -> JobSpec:
    """Validate GET /run?command=...&timeout=...&stderr=... query values."""
    if command is None:
        raise InvalidRequest("missing query parameter 'command'")
    try:
        argv = parse_command(
            command, max_length=settings.max_command_length, max_items=settings.max_argv_items
        )
    except InvalidCommand as exc:
        raise InvalidRequest(str(exc)) from None
    if timeout is not None:
        if not _DECIMAL.fullmatch(timeout):
            raise InvalidRequest("timeout must be a number of seconds")
        timeout = float(timeout)
    return JobSpec(argv=tuple(argv), timeout=parse_timeout(timeout, settings), stderr=parse_stderr_mode(stderr))


def parse_last_event_id(header: str | None, query: str | None) -> int:
    """The resume cursor: the Last-Event-ID header wins over ?last_event_id=; 0 means from the start.

    Both are checked, even when the header wins: a malformed one is a 400, never silently ignored.
    """
    from_query = _event_id(query)
    return _event_id(header) if header is not None else from_query


def _event_id(value: str | None) -> int:
    if value is None:
        return 0
    value = value.strip()
    if value == "":
        return 0
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise InvalidRequest("Last-Event-ID must be a non-negative integer event id")
    return int(value)
