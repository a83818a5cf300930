"""Who commands run as: the global ``run_as_user``, and each role's own.

Only a server running as root can switch users; otherwise every command runs
as the server's own user. Looking names up reads the user and group
databases, nothing else: the master (which must not import gevent) and the
runner both use this.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..config import Settings

SERVER_ITSELF = ("", "root")  # run_as_user values that mean "do not switch"


@dataclass(frozen=True)
class RunAs:
    """A user and group to switch to before exec."""

    uid: int
    gid: int


@dataclass(frozen=True)
class JobUsers:
    """Who each job runs as: the default, and the roles that name their own user (None: the server's user)."""

    default: RunAs | None = None
    by_role: Mapping[str, RunAs | None] = field(default_factory=dict)

    def every(self) -> list[RunAs | None]:
        """Every user some command may run as (None: the server's own user)."""
        return [self.default, *self.by_role.values()]


def _resolve(user: str, group: str, where: str) -> RunAs | None:
    if user in SERVER_ITSELF:
        return None
    try:
        entry = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    except KeyError as exc:
        raise LookupError(f"{where}: no such user or group ({exc.args[0]})") from None
    return RunAs(entry.pw_uid, gid)


def resolve_job_users(settings: Settings, server_is_root: bool) -> JobUsers:
    """The users jobs run as, looked up by name; LookupError naming the setting of a missing user or group."""
    if not server_is_root:
        return JobUsers()
    default = _resolve(settings.run_as_user, settings.run_as_group, "run_as_user/run_as_group")
    by_role = {
        name: _resolve(role.run_as_user, role.run_as_group, f"roles.{name}.run_as_user/run_as_group")
        for name, role in settings.roles.items()
        if role.run_as_user
    }
    return JobUsers(default, by_role)
