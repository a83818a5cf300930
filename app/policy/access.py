"""Who someone is and what they may do: principals, roles, credentials. Pure code.

Tokens are random and long, so a SHA-256 of the token is a safe thing to keep
in the config; passwords are low-entropy, so they are kept as scrypt hashes.
Both are compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ALL = "*"
_TOKEN_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_HOST_ENTRY = re.compile(r"(?:tag:)?[A-Za-z0-9._-]{1,64}")  # a role's ``hosts`` entry (besides "*")
SYSTEM_CHANNELS = frozenset({"jobs", "stats"})  # written by the server only


class AccessConfigError(ValueError):
    """The access-control part of the configuration is invalid."""


@dataclass(frozen=True)
class Role:
    """What holders of a role may do. ``*`` in commands or actions means all of them."""

    name: str
    commands: frozenset[str] = frozenset()  # program names (or allowed paths) for free-text commands
    actions: frozenset[str] = frozenset()
    see_all_jobs: bool = False
    cancel_all_jobs: bool = False
    subscribe: frozenset[str] = frozenset({ALL})  # channels this role may read
    publish: frozenset[str] = frozenset()  # channels this role may post to
    run_as_user: str = ""  # who this role's commands run as (when the server is root); "" = the global setting
    run_as_group: str = ""  # with run_as_user: its group; "" = that user's primary group
    read_metrics: bool = False  # may read GET /metrics from any address (issue 19)
    hosts: frozenset[str] = frozenset({ALL})  # hosts a run may target (issue 20): names, "tag:<t>", or "*"

    @property
    def free_text(self) -> bool:
        """Whether this role may run commands typed as text or argv at all."""
        return bool(self.commands)


_EVERY = frozenset({ALL})
BUILTIN_ROLES: dict[str, Role] = {
    "admin": Role("admin", _EVERY, _EVERY, see_all_jobs=True, cancel_all_jobs=True, publish=_EVERY),
    "operator": Role("operator", _EVERY, _EVERY, publish=_EVERY),
    "runner": Role("runner", frozenset(), _EVERY, publish=_EVERY),  # named actions only
    "viewer": Role("viewer", see_all_jobs=True),  # reads every job and channel, changes nothing
    "metrics": Role("metrics", subscribe=frozenset(), read_metrics=True),  # GET /metrics, and nothing else
}


@dataclass(frozen=True)
class Principal:
    """An authenticated (or, on loopback without auth, anonymous) caller."""

    user: str
    roles: tuple[str, ...]
    via: str  # "anonymous", "token", "session", "proxy", "ticket"
    ticket_job: str | None = None  # a stream ticket grants reading this one job, nothing else


@dataclass(frozen=True)
class Credential:
    """A configured token hash or password hash, with the user and roles it grants."""

    user: str
    roles: tuple[str, ...]
    token_hash: str = ""
    password_hash: str = ""

    @property
    def key(self) -> str:
        """A short, stable name for this credential, for sessions to say which one logged in."""
        return hashlib.sha256((self.token_hash or self.password_hash).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Policy:
    """The roles in force, and the decisions made from them."""

    roles: Mapping[str, Role] = field(default_factory=lambda: dict(BUILTIN_ROLES))

    def _roles_of(self, principal: Principal) -> list[Role]:
        return [self.roles[name] for name in principal.roles if name in self.roles]

    def role_for_command(self, principal: Principal, program: str) -> Role | None:
        """The first of the principal's roles that allows free text whose argv[0] is ``program``."""
        if principal.ticket_job is not None:
            return None
        return next((r for r in self._roles_of(principal) if ALL in r.commands or program in r.commands), None)

    def role_for_action(self, principal: Principal, action: str) -> Role | None:
        """The first of the principal's roles that allows the named action."""
        if principal.ticket_job is not None:
            return None
        return next((r for r in self._roles_of(principal) if ALL in r.actions or action in r.actions), None)

    def may_run_command(self, principal: Principal, program: str) -> bool:
        """May this principal run free text whose argv[0] is ``program``?"""
        return self.role_for_command(principal, program) is not None

    def may_run_action(self, principal: Principal, action: str) -> bool:
        """May this principal run the named action?"""
        return self.role_for_action(principal, action) is not None

    def may_see_job(self, principal: Principal, owner: str, job_id: str) -> bool:
        """May this principal read the job (metadata, events, output)?"""
        if principal.ticket_job is not None:
            return principal.ticket_job == job_id
        return owner == principal.user or any(role.see_all_jobs for role in self._roles_of(principal))

    def may_cancel_job(self, principal: Principal, owner: str) -> bool:
        """May this principal cancel the job?"""
        if principal.ticket_job is not None:
            return False
        if any(role.cancel_all_jobs for role in self._roles_of(principal)):
            return True
        return owner == principal.user and any(role.free_text or role.actions for role in self._roles_of(principal))

    def may_subscribe(self, principal: Principal, channel: str) -> bool:
        """May this principal read the channel?"""
        if principal.ticket_job is not None:
            return False
        return any(ALL in role.subscribe or channel in role.subscribe for role in self._roles_of(principal))

    def may_publish(self, principal: Principal, channel: str) -> bool:
        """May this principal post to the channel? (System channels are written by the server only.)"""
        if principal.ticket_job is not None or channel in SYSTEM_CHANNELS:
            return False
        return any(ALL in role.publish or channel in role.publish for role in self._roles_of(principal))

    def may_read_metrics(self, principal: Principal) -> bool:
        """May this principal read GET /metrics from anywhere (the ``metrics`` role)?"""
        return principal.ticket_job is None and any(role.read_metrics for role in self._roles_of(principal))

    def may_target(self, principal: Principal, host: str, tags: Iterable[str]) -> bool:
        """May this principal start a run's job on ``host`` (with ``tags``)? A role's ``hosts`` entry names it,
        names one of its tags (``tag:<t>``), or is ``*``."""
        if principal.ticket_job is not None:
            return False
        wanted = {ALL, host, *(f"tag:{tag}" for tag in tags)}
        return any(role.hosts & wanted for role in self._roles_of(principal))

    def sees_all_jobs(self, principal: Principal) -> bool:
        """Whether job lists should include other users' jobs."""
        return principal.ticket_job is None and any(role.see_all_jobs for role in self._roles_of(principal))


def parse_roles(document: Any) -> dict[str, Role]:
    """Built-in roles overlaid with ``[roles.NAME]`` tables from the config."""
    roles = dict(BUILTIN_ROLES)
    if document is None:
        return roles
    if not isinstance(document, Mapping):
        raise AccessConfigError("roles: expected a table of role tables")
    allowed_keys = {
        "commands", "actions", "see_all_jobs", "cancel_all_jobs", "subscribe", "publish", "run_as_user", "run_as_group",
        "read_metrics", "hosts",
    }
    for name, spec in document.items():
        if not isinstance(spec, Mapping):
            raise AccessConfigError(f"roles.{name}: expected a table")
        unknown = set(spec) - allowed_keys
        if unknown:
            raise AccessConfigError(f"roles.{name}: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("commands", "actions", "subscribe", "publish"):
            value = spec.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise AccessConfigError(f"roles.{name}.{key}: expected a list of strings")
        for key in ("see_all_jobs", "cancel_all_jobs", "read_metrics"):
            if not isinstance(spec.get(key, False), bool):
                raise AccessConfigError(f"roles.{name}.{key}: expected true or false")
        for key in ("run_as_user", "run_as_group"):
            if not isinstance(spec.get(key, ""), str):
                raise AccessConfigError(f"roles.{name}.{key}: expected a user or group name")
        hosts = spec.get("hosts", [ALL])
        if not isinstance(hosts, list) or not all(isinstance(v, str) for v in hosts):
            raise AccessConfigError(f"roles.{name}.hosts: expected a list of host names, 'tag:<tag>' or '*'")
        for entry in hosts:
            if entry != ALL and not _HOST_ENTRY.fullmatch(entry):
                raise AccessConfigError(
                    f"roles.{name}.hosts: {entry!r} is not a host name, 'tag:<tag>' or '*'")
        if spec.get("run_as_group") and not spec.get("run_as_user"):
            raise AccessConfigError(f"roles.{name}.run_as_group: needs run_as_user too")
        roles[name] = Role(
            name,
            frozenset(spec.get("commands", [])),
            frozenset(spec.get("actions", [])),
            see_all_jobs=spec.get("see_all_jobs", False),
            cancel_all_jobs=spec.get("cancel_all_jobs", False),
            subscribe=frozenset(spec.get("subscribe", [ALL])),
            publish=frozenset(spec.get("publish", [])),
            run_as_user=spec.get("run_as_user", ""),
            run_as_group=spec.get("run_as_group", ""),
            read_metrics=spec.get("read_metrics", False),
            hosts=frozenset(hosts),
        )
    return roles


def parse_credentials(tokens: Any, users: Any, roles: Mapping[str, Role]) -> tuple[Credential, ...]:
    """``[[tokens]]`` (hash, user, roles) and ``[[users]]`` (name, password_hash, roles) from the config."""
    found: list[Credential] = []
    for kind, entries in (("tokens", tokens), ("users", users)):
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise AccessConfigError(f"{kind}: expected an array of tables")
        for index, entry in enumerate(entries):
            where = f"{kind}[{index}]"
            if not isinstance(entry, Mapping):
                raise AccessConfigError(f"{where}: expected a table")
            user = entry.get("user" if kind == "tokens" else "name")
            if not isinstance(user, str) or not user:
                raise AccessConfigError(f"{where}: needs a non-empty {'user' if kind == 'tokens' else 'name'}")
            entry_roles = entry.get("roles", [])
            if not isinstance(entry_roles, list) or not all(isinstance(r, str) for r in entry_roles):
                raise AccessConfigError(f"{where}.roles: expected a list of strings")
            unknown = [r for r in entry_roles if r not in roles]
            if unknown:
                raise AccessConfigError(f"{where}.roles: unknown role(s) {', '.join(unknown)}")
            if kind == "tokens":
                digest = entry.get("hash")
                if not isinstance(digest, str) or not _TOKEN_HASH.fullmatch(digest):
                    raise AccessConfigError(
                        f"{where}.hash: expected 'sha256:<64 lower-case hex digits>' (from 'sse-commander token')"
                    )
                found.append(Credential(user, tuple(entry_roles), token_hash=digest))
            else:
                digest = entry.get("password_hash")
                if not isinstance(digest, str) or not digest.startswith("scrypt$"):
                    raise AccessConfigError(f"{where}.password_hash: expected a hash from 'sse-commander password'")
                found.append(Credential(user, tuple(entry_roles), password_hash=digest))
    return tuple(found)


def _utf8(text: str) -> bytes:
    """Text as bytes for hashing and comparing: UTF-8, with lone surrogates (valid JSON) kept, never an error."""
    return text.encode("utf-8", "surrogatepass")


def new_token() -> str:
    """A fresh API token: 32 random bytes, URL-safe."""
    return "ssecmd_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The form a token is kept in the config."""
    return "sha256:" + hashlib.sha256(_utf8(token)).hexdigest()


def find_key(credentials: Iterable[Credential], user: str, key: str) -> Credential | None:
    """The credential a session was opened with, if it is still configured for that user."""
    for credential in credentials:
        if credential.user == user and hmac.compare_digest(_utf8(credential.key), _utf8(key)):
            return credential
    return None


def find_token(credentials: Iterable[Credential], token: str) -> Credential | None:
    """The credential a presented token matches, compared in constant time."""
    presented = hash_token(token)
    match = None
    for credential in credentials:
        # Compare against every entry, so timing says nothing about which one matched.
        if credential.token_hash and hmac.compare_digest(_utf8(credential.token_hash), _utf8(presented)):
            match = credential
    return match


_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str, salt: bytes | None = None) -> str:
    """An scrypt hash for ``[[users]] password_hash``."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(_utf8(password), salt=salt, dklen=32, **_SCRYPT)
    encode = base64.urlsafe_b64encode
    return f"scrypt${_SCRYPT['n']}${encode(salt).decode()}${encode(digest).decode()}"


def check_password(credentials: Iterable[Credential], user: str, password: str) -> Credential | None:
    """The credential for ``user`` if ``password`` matches its hash."""
    # compare_digest takes str only when it is ASCII: names like "jörg" are compared as bytes.
    wanted = _utf8(user)
    for credential in credentials:
        if credential.password_hash and hmac.compare_digest(_utf8(credential.user), wanted):
            try:
                _, n, salt, expected = credential.password_hash.split("$")
                digest = hashlib.scrypt(
                    _utf8(password),
                    salt=base64.urlsafe_b64decode(salt),
                    dklen=32,
                    n=int(n),
                    r=_SCRYPT["r"],
                    p=_SCRYPT["p"],
                )
            except (ValueError, TypeError):
                return None
            if hmac.compare_digest(base64.urlsafe_b64encode(digest).decode(), expected):
                return credential
            return None
    # Spend the same time on unknown users as on wrong passwords.
    hashlib.scrypt(b"x", salt=b"0" * 16, dklen=32, **_SCRYPT)
    return None
