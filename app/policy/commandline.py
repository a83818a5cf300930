"""Turning a request into an argv list: pure validation, no I/O.

Commands are split with shell-like quoting but never run by a shell, so
``;``, ``|``, ``$(...)``, backticks and redirections are plain arguments.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any


class InvalidCommand(ValueError):
    """The command or argv cannot be accepted; the message says why."""


def _check_text(value: str, what: str) -> None:
    if "\0" in value:
        raise InvalidCommand(f"{what} must not contain NUL bytes")


def parse_command(text: Any, *, max_length: int, max_items: int) -> list[str]:
    """Split a command line into argv with shlex; refuse empty, oversized or NUL-bearing input."""
    if not isinstance(text, str):
        raise InvalidCommand("command must be a string")
    if len(text) > max_length:
        raise InvalidCommand(f"command is longer than {max_length} characters")
    _check_text(text, "command")
    try:
        argv = shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        raise InvalidCommand(f"command cannot be split: {exc}") from None
    return validate_argv(argv, max_length=max_length, max_items=max_items)


def validate_argv(argv: Any, *, max_length: int, max_items: int) -> list[str]:
    """Check an argv list given directly as JSON."""
    if not isinstance(argv, Sequence) or isinstance(argv, (str, bytes)):
        raise InvalidCommand("argv must be a list of strings")
    if not argv:
        raise InvalidCommand("command is empty")
    if len(argv) > max_items:
        raise InvalidCommand(f"argv has more than {max_items} items")
    total = 0
    for item in argv:
        if not isinstance(item, str):
            raise InvalidCommand("argv must be a list of strings")
        _check_text(item, "argv")
        total += len(item) + 1
    if total - 1 > max_length:
        raise InvalidCommand(f"command is longer than {max_length} characters")
    if not argv[0]:
        raise InvalidCommand("the program name is empty")
    return list(argv)


def display_command(argv: Sequence[str]) -> str:
    """The argv as a shell-quoted line, for people to read."""
    return shlex.join(argv)
