"""Which server, and with which token: --url or SSECMD_URL; SSECMD_TOKEN or --token-file, never an argument.

A token on the command line would show in ``ps`` and in shell history, so
there is no option for one. A token file must be private (like ssh's keys).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "SSECMD_URL"
TOKEN_ENV = "SSECMD_TOKEN"
TOKEN_FILE_ENV = "SSECMD_TOKEN_FILE"
# Every variable the client reads; the server's settings loader skips exactly these (app/config.py CLIENT_ENV).
CLIENT_ENV = (URL_ENV, TOKEN_ENV, TOKEN_FILE_ENV)


class ConnectionConfigError(ValueError):
    """The server address or the token is unusable; the message says how to fix it."""


@dataclass(frozen=True)
class Connection:
    """A server's base URL and the caller's token (None: no Authorization header)."""

    url: str
    token: str | None = None


def check_url(url: str) -> str:
    """The base URL without a trailing slash; http(s) with a host, or ConnectionConfigError."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectionConfigError(f"--url {url!r}: expected http://HOST[:PORT][/PATH] or https://...")
    if parts.query or parts.fragment:
        raise ConnectionConfigError(f"--url {url!r}: no query or fragment, please")
    return url.strip().rstrip("/")


def _check_token(token: str, where: str) -> str:
    token = token.strip()
    if not token:
        raise ConnectionConfigError(f"{where} is empty")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise ConnectionConfigError(f"{where} holds characters a token cannot have")
    return token


def read_token_file(path: str) -> str:
    """The token in a file only its owner may read or write (as ssh asks of private keys)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not hang the client
    except OSError as exc:
        raise ConnectionConfigError(f"token file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConnectionConfigError(f"token file {path}: not a regular file")
        if info.st_mode & 0o077:
            raise ConnectionConfigError(
                f"token file {path} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"fix with: chmod 600 {path}"
            )
        data = os.read(fd, 4097)
    finally:
        os.close(fd)
    if len(data) > 4096:
        raise ConnectionConfigError(f"token file {path}: too large for a token")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConnectionConfigError(f"token file {path}: not a token (non-ASCII bytes)") from None
    return _check_token(text, f"token file {path}")


def resolve(url: str, token_file: str | None, environ: Mapping[str, str]) -> Connection:
    """The connection from the options and the environment: a token file wins over SSECMD_TOKEN."""
    if token_file:
        token: str | None = read_token_file(token_file)
    elif environ.get(TOKEN_ENV):
        token = _check_token(environ[TOKEN_ENV], TOKEN_ENV)
    else:
        token = None
    return Connection(check_url(url), token)
