"""The history's data directory: where it is, and whether it can be used. No gevent; the master uses it too.

``data_dir`` defaults to ``$XDG_STATE_HOME/sse-commander``, else
``~/.local/state/sse-commander``. It is made 0700 if missing; it must be a
directory owned by the server's user and writable by it, and its ``FORMAT``
file must name a format this version reads. Anything else is a start-up error
that says what to fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

FORMAT_FILE = "FORMAT"
FORMAT_NAME = "sse-commander-history"
FORMAT_VERSION = 2  # 2: records of ASCII output store no raw copy (records.SAME_AS_TEXT)
READABLE_VERSIONS = (1, 2)  # a version 1 directory reads as is, and is marked 2 before anything new is written
DATABASE = "history.sqlite3"
JOBS_DIR = "jobs"


class DataDirError(Exception):
    """The data directory cannot be used (the message says why and what to do)."""


def default_data_dir(environ: Mapping[str, str]) -> str:
    """``$XDG_STATE_HOME/sse-commander``, else ``~/.local/state/sse-commander``."""
    state_home = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state_home):  # the XDG spec: a relative path is invalid and ignored
        home = environ.get("HOME") or os.path.expanduser("~")
        state_home = os.path.join(home, ".local", "state")
    return os.path.join(state_home, "sse-commander")


def resolve_data_dir(setting: str, environ: Mapping[str, str] | None = None) -> str:
    """The data directory the setting names (its default when empty), as an absolute path."""
    environ = os.environ if environ is None else environ
    return os.path.abspath(setting or default_data_dir(environ))


def prepare_data_dir(path: str) -> str:
    """Make (0700) and check the data directory; its path, or DataDirError saying what is wrong."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"data_dir {path}: cannot create it: {exc.strerror}") from None
    if not os.path.isdir(path):
        raise DataDirError(f"data_dir {path}: not a directory")
    info = os.stat(path)
    if info.st_uid != os.geteuid():
        raise DataDirError(
            f"data_dir {path}: owned by uid {info.st_uid}, not by this server's uid {os.geteuid()}; "
            "chown it to the server's user or set data_dir elsewhere"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataDirError(f"data_dir {path}: not writable by this server's user; fix its mode (0700)")
    _check_format(path)
    try:
        os.makedirs(os.path.join(path, JOBS_DIR), mode=0o700, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"data_dir {path}: cannot create {JOBS_DIR}/: {exc.strerror}") from None
    return path


def _check_format(path: str) -> None:
    marker = os.path.join(path, FORMAT_FILE)
    try:
        with open(marker) as fh:
            text = fh.read().strip()
    except FileNotFoundError:
        if os.path.exists(os.path.join(path, DATABASE)):
            raise DataDirError(f"data_dir {path}: holds a database but no {FORMAT_FILE} file; "
                               "not written by this server (move it away)") from None
        _write_format(marker, path)
        return
    except OSError as exc:
        raise DataDirError(f"data_dir {path}: cannot read {FORMAT_FILE}: {exc.strerror}") from None
    name, _, version = text.partition(" ")
    if name != FORMAT_NAME or not version.isdigit():
        raise DataDirError(f"data_dir {path}: {FORMAT_FILE} says {text[:60]!r}: not an SSE Commander history")
    if int(version) not in READABLE_VERSIONS:
        raise DataDirError(
            f"data_dir {path}: history format version {version} is not supported (this server reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}); use the matching server version, or move the directory "
            "away to start afresh"
        )
    if int(version) < FORMAT_VERSION:
        # Older files read as they are; new ones will be written in this version, which an older server
        # would misread: say so in the marker, so that server refuses the directory at start-up instead.
        _write_format(marker, path)


def _write_format(marker: str, path: str) -> None:
    try:
        with open(marker + ".tmp", "w") as fh:
            fh.write(f"{FORMAT_NAME} {FORMAT_VERSION}\n")
        os.replace(marker + ".tmp", marker)
    except OSError as exc:
        raise DataDirError(f"data_dir {path}: cannot write {FORMAT_FILE}: {exc.strerror}") from None
