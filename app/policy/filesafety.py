"""Files and directories that must stay out of reach of jobs and of other local users.

The configuration file holds ``session_secret`` and every token and password
hash: whoever reads it can forge an admin's session. The audit log and
gunicorn's logs say who ran what, and carry stream tickets. ``run_dir`` holds
the records from which the root master kills process groups. So, before it
forks a worker, the master refuses to start when any of them can be read or
changed by a user that jobs run as, or by every local user, and says which
``chmod`` or ``chown`` fixes it.

The rules are pure functions of what ``stat`` says (``Node``), who jobs run
as (``JobAccounts``) and who the server is; ``startup_problems`` and
``ensure_private_dir`` are the thin I/O around them. Only mode bits and
owners are judged: ACLs are not read. No gevent or Flask here: the master
imports this before workers are forked.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..process.runas import JobUsers
from .access import Role

_RECORD = re.compile(rb"[0-9]{0,20}")  # what ProcessGroupRegistry.add writes: the leader's start time, or nothing


class UnsafePath(RuntimeError):
    """A file or directory the server relies on is open to others; the message says how to fix it."""


@dataclass(frozen=True)
class Node:
    """What stat says about one path, with owner and group names for messages."""

    path: str
    mode: int
    uid: int
    gid: int
    owner: str = ""
    group: str = ""

    @property
    def perms(self) -> int:
        return stat.S_IMODE(self.mode) & 0o777

    @property
    def sticky(self) -> bool:
        return bool(self.mode & stat.S_ISVTX)


@dataclass(frozen=True)
class JobAccounts:
    """The uids and gids jobs run as (other than the server's own)."""

    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()

    @classmethod
    def of(cls, users: JobUsers) -> JobAccounts:
        """The accounts behind the run-as users of the settings."""
        every = [user for user in users.every() if user is not None]
        return cls(frozenset(u.uid for u in every), frozenset(u.gid for u in every))


def _mode(bits: int) -> str:
    return f"{bits:03o}"


def _group_opened(node: Node, jobs: JobAccounts, bits: int) -> bool:
    return node.gid in jobs.gids and bool(node.perms & bits)


def secret_file_problem(label: str, file: Node, jobs: JobAccounts, server_user: str) -> str | None:
    """Why a regular file holding secrets is exposed, with the command that fixes it; None if it is not."""
    why: list[str] = []
    fixes: list[str] = []
    if file.uid in jobs.uids:
        why.append(f"belongs to {file.owner or file.uid}, a user jobs run as")
        fixes.append(f"chown {server_user} {file.path}")
    mode = file.perms
    if mode & 0o006:
        why.append(f"can be {'read' if mode & 0o004 else 'written'} by every local user")
    if _group_opened(file, jobs, 0o060):
        why.append(f"can be read or written by group {file.group or file.gid}, which jobs run as")
    if mode & 0o006 or _group_opened(file, jobs, 0o060):
        # The owner alone; a group of admins (0640, not a group jobs run as) is also accepted.
        fixes.append(f"chmod {_mode(mode & 0o700)} {file.path}")
    if not why:
        return None
    return f"{label} {file.path} {' and '.join(why)} (mode {_mode(file.perms)}): fix with `{' && '.join(fixes)}`"


def secret_dir_problem(label: str, file_path: str, directory: Node, file: Node | None, jobs: JobAccounts,
                       server_user: str) -> str | None:
    """Why the directory holding a secret file lets jobs or other users replace (or plant) it; None if it does not."""
    if directory.uid in jobs.uids:
        return (f"the directory {directory.path} of {label} {file_path} belongs to {directory.owner or directory.uid}, "
                f"a user jobs run as, who could replace the file: fix with `chown {server_user} {directory.path}`")
    # In a sticky directory (/tmp) others cannot replace a file that is not theirs, but can create a missing one.
    protected = directory.sticky and file is not None and file.uid not in jobs.uids
    others = bool(directory.perms & 0o002)
    group = _group_opened(directory, jobs, 0o020)
    if protected or not (others or group):
        return None
    who = "every local user" if others else f"group {directory.group or directory.gid}, which jobs run as"
    where = f"the directory {directory.path} of {label} {file_path} can be written by {who}"
    if directory.sticky:
        return f"{where}, who could create the file first: move it to a directory only {server_user} can write"
    fixed = directory.perms & ~0o022
    return f"{where} (mode {_mode(directory.perms)}), who could replace the file: fix with " \
           f"`chmod {_mode(fixed)} {directory.path}`"


def private_dir_problem(directory: Node, server_uid: int, server_user: str) -> str | None:
    """Why a directory only this server may write (run_dir) cannot be used; None if it can. ``directory`` is lstat's."""
    path = directory.path
    if not stat.S_ISDIR(directory.mode):
        kind = "a symbolic link" if stat.S_ISLNK(directory.mode) else "not a directory"
        return f"{path} is {kind}: remove it, or set run_dir to a directory of this server's own"
    if directory.uid != server_uid:
        return (f"{path} belongs to {directory.owner or directory.uid}, not to {server_user} who runs this server: "
                f"someone else made it, and could plant records in it. Remove it (`rm -r {path}`) or set run_dir")
    if directory.perms & 0o022:
        return (f"{path} can be written by other users (mode {_mode(directory.perms)}), who could plant records "
                f"in it: fix with `chmod 700 {path}`")
    return None


def foreign_record(record: Node, content: bytes, server_uid: int) -> str | None:
    """Why a process-group record was not written by this server (so must not be acted on); None if it was."""
    if not stat.S_ISREG(record.mode):
        return "not a regular file"
    if record.uid != server_uid:
        return f"written by uid {record.uid}, not by this server"
    if not _RECORD.fullmatch(content):
        return "not in the form this server writes"
    return None


# I/O: stat the paths and report what the rules say.


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def node(path: str, *, follow: bool = True) -> Node:
    """stat (or lstat) a path, with the owner's and the group's names."""
    st = os.stat(path) if follow else os.lstat(path)
    return Node(path, st.st_mode, st.st_uid, st.st_gid, _name(pwd.getpwuid, st.st_uid), _name(grp.getgrgid, st.st_gid))


def server_user() -> str:
    """The name of the user this server runs as."""
    return _name(pwd.getpwuid, os.geteuid())


def secret_file_problems(label: str, path: str, jobs: JobAccounts) -> list[str]:
    """What exposes one secret file (regular files only: /dev/null or a pipe holds nothing), and its directories."""
    me = server_user()
    problems: list[str] = []
    try:
        file: Node | None = node(path)
    except FileNotFoundError:
        file = None  # made by the server later, 0600
    except OSError as exc:
        return [f"{label} {path}: cannot stat: {exc.strerror}"]
    if file is not None and not stat.S_ISREG(file.mode):
        return []
    if file is not None:
        problem = secret_file_problem(label, file, jobs, me)
        if problem:
            problems.append(problem)
    given = os.path.abspath(path)
    for directory in dict.fromkeys((os.path.dirname(given), os.path.dirname(os.path.realpath(given)))):
        try:
            problem = secret_dir_problem(label, path, node(directory), file, jobs, me)
        except OSError as exc:
            problem = f"the directory {directory} of {label} {path}: cannot stat: {exc.strerror}"
        if problem:
            problems.append(problem)
    return problems


def ensure_private_dir(path: str) -> None:
    """Create ``path`` 0700 if it is missing; UnsafePath if it is not this server's alone."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    problem = private_dir_problem(node(path, follow=False), os.geteuid(), server_user())
    if problem:
        raise UnsafePath(problem)


def shared_user_warnings(users: JobUsers, server_is_root: bool, roles: Mapping[str, Role]) -> list[str]:
    """Warnings for commands that run as the server's own user, and so can read everything it can."""
    me = server_user()
    if not server_is_root:
        ignored = sorted(name for name, role in roles.items() if role.run_as_user)
        warnings = [
            f"commands run as {me}, the user this server runs as: they can read its configuration (secrets "
            "included) and anything else it can. Start it as root so that they run as run_as_user."
        ]
        if ignored:
            warnings.append(f"run_as_user of role(s) {', '.join(ignored)} is ignored: only root can switch users")
        return warnings
    who = ["commands" if users.default is None else ""]
    who += [f"role {name}'s commands" for name, user in users.by_role.items() if user is None]
    return [f"{w} run as {me}: they can read this server's configuration (secrets included) and anything else "
            "it can" for w in who if w]


def startup_problems(files: Iterable[tuple[str, str]], run_dir: str, users: JobUsers) -> list[str]:
    """Every reason not to start: exposed secret files (label, path), and a run_dir that is not ours alone."""
    jobs = JobAccounts.of(users)
    problems = [problem for label, path in files for problem in secret_file_problems(label, path, jobs)]
    try:
        ensure_private_dir(run_dir)
    except UnsafePath as exc:
        problems.append(f"run_dir: {exc}")
    except OSError as exc:
        problems.append(f"run_dir {run_dir}: cannot create it: {exc.strerror}")
    return problems
