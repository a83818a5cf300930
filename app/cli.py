"""The ``sse-commander`` command: serve, or show the effective settings."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from .access import hash_password, hash_token, new_token
from .config import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="sse-commander", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "serve",
        help="run gunicorn with the gevent worker and the bundled settings; other options go to gunicorn",
    )
    sub.add_parser("settings", help="print the effective settings as JSON and exit")
    token = sub.add_parser("token", help="create an API token; prints it once, and the [[tokens]] entry for the config")
    token.add_argument("--user", required=True)
    token.add_argument("--roles", default="operator", help="comma-separated roles (default: operator)")
    password = sub.add_parser("password", help="hash a password (read from stdin) for a [[users]] entry")
    password.add_argument("--user", required=True)
    password.add_argument("--roles", default="operator", help="comma-separated roles (default: operator)")
    args, gunicorn_args = parser.parse_known_args(argv)
    if args.command != "serve" and gunicorn_args:
        parser.error(f"unrecognized arguments: {' '.join(gunicorn_args)}")
    if args.command == "token":
        return _print_token(args.user, _roles(args.roles))
    if args.command == "password":
        return _print_password(args.user, _roles(args.roles))
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"sse-commander: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "settings":
        shown = dataclasses.asdict(settings)
        if shown["session_secret"]:
            shown["session_secret"] = "(set)"
        print(json.dumps(shown, indent=2, default=list))
        return 0
    command = [
        sys.executable, "-m", "gunicorn", "-c", "python:app.gunicorn_conf",
        *gunicorn_args, "app:create_app()",
    ]
    os.execv(sys.executable, command)
    return 0  # pragma: no cover


def _roles(text: str) -> list[str]:
    return [role.strip() for role in text.split(",") if role.strip()]


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(_toml_string(item) for item in items) + "]"


def _toml_string(text: str) -> str:
    # JSON strings are TOML basic strings, except that TOML has no surrogate-pair escapes.
    return json.dumps(text, ensure_ascii=False)


def _print_token(user: str, roles: list[str]) -> int:
    token = new_token()
    print(f"# the token for {user}, shown only now, then the entry for the config file:", file=sys.stderr)
    print(token)
    print(f'[[tokens]]\nuser = {_toml_string(user)}\nroles = {_toml_list(roles)}\nhash = "{hash_token(token)}"')
    return 0


def _print_password(user: str, roles: list[str]) -> int:
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("sse-commander: give the password on standard input", file=sys.stderr)
        return 2
    entry = f'[[users]]\nname = {_toml_string(user)}\nroles = {_toml_list(roles)}\n'
    print(entry + f'password_hash = "{hash_password(password)}"')
    return 0
