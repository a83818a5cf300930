"""The ``sse-commander`` command: serve, or show the effective settings."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

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
    args, gunicorn_args = parser.parse_known_args(argv)
    if args.command != "serve" and gunicorn_args:
        parser.error(f"unrecognized arguments: {' '.join(gunicorn_args)}")
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"sse-commander: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "settings":
        print(json.dumps(dataclasses.asdict(settings), indent=2, default=list))
        return 0
    command = [
        sys.executable, "-m", "gunicorn", "-c", "python:app.gunicorn_conf",
        *gunicorn_args, "app:create_app()",
    ]
    os.execv(sys.executable, command)
    return 0  # pragma: no cover
