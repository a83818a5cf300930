"""Which executables may run.

Names are resolved on the children's PATH once, at start-up; absolute
paths are taken as written. At request time a program is accepted only if
it is one of those names, or exactly one of those absolute paths. Relative
paths, ``..`` and symlinks that point elsewhere never match, and the
program that runs is always the path resolved at start-up.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)


class CommandNotAllowed(PermissionError):
    """The program is not on the allowlist; the message says why."""


@dataclass(frozen=True)
class Allowlist:
    """A resolved allowlist: bare name or allowed absolute path -> executable path."""

    by_name: dict[str, str]
    by_path: dict[str, str]
    allow_any: bool = False
    search_path: str = ""

    @classmethod
    def resolve(cls, entries: Iterable[str], *, search_path: str, allow_any: bool = False) -> Allowlist:
        """Resolve configured entries against ``search_path`` (this reads the filesystem)."""
        by_name: dict[str, str] = {}
        by_path: dict[str, str] = {}
        # A relative PATH entry would resolve against the children's working
        # directory at exec time, which may be writable by anyone.
        search_path = os.pathsep.join(d for d in search_path.split(os.pathsep) if os.path.isabs(d))
        for entry in entries:
            if os.path.isabs(entry):
                path = os.path.normpath(entry)
                by_path[path] = path
                real = os.path.realpath(path)
                by_path.setdefault(real, path)
                by_name.setdefault(os.path.basename(path), path)
            elif "/" in entry:
                raise ValueError(f"allowed_commands: {entry!r} must be a bare name or an absolute path")
            else:
                found = shutil.which(entry, path=search_path)
                if found is None:
                    log.warning("allowed command %r is not on PATH %s; it will be refused", entry, search_path)
                    continue
                by_name[entry] = found
                by_path.setdefault(found, found)
        return cls(by_name=by_name, by_path=by_path, allow_any=allow_any, search_path=search_path)

    def executable_for(self, program: str) -> str:
        """The path to execute for ``program`` (argv[0]), or raise CommandNotAllowed."""
        if "\0" in program or not program:
            raise CommandNotAllowed("invalid program name")
        if "/" not in program:
            if program in self.by_name:
                return self.by_name[program]
            if self.allow_any:
                found = shutil.which(program, path=self.search_path)
                # Not found: run it anyway, so the client gets the normal "could not start" event.
                return found or os.path.join(self.search_path.split(os.pathsep)[0], program)
            raise CommandNotAllowed(f"command {program!r} is not allowed")
        if not os.path.isabs(program):
            raise CommandNotAllowed("relative paths are not allowed; use a bare command name")
        if ".." in program.split("/") or os.path.normpath(program) != program.rstrip("/"):
            raise CommandNotAllowed("paths containing '..' or redundant separators are not allowed")
        if self.allow_any:
            return program
        if program in self.by_path:
            return self.by_path[program]
        raise CommandNotAllowed(f"path {program!r} is not allowed")

    def resolve_program(self, program: str) -> str:
        """The path of a program named by a configured action (trusted, so not checked against the list)."""
        if "/" in program:
            return program
        return shutil.which(program, path=self.search_path) or program

    def names(self) -> list[str]:
        """The allowed names, sorted, for listing to clients."""
        return sorted(self.by_name)
