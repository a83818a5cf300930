"""The resume position of a run's event stream (``GET /runs/<id>/events``): one ``Last-Event-ID``. Pure code.

Per target host, in the run's order: the last host state sent (a letter) and the offset of the last event of
its job sent; and whether ``run_exit`` was sent. ``R.r120.s35.p0`` says: host 1 was sent as running, through
its job's event 120; host 2 finished (succeeded) and was sent whole; host 3 nothing yet. ``E.`` instead of
``R.`` once ``run_exit`` is sent. Clients treat it as opaque.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .runstate import HOST_STATES

CODES = dict(zip(HOST_STATES, "prsfxulck", strict=True))
STATES = {code: state for state, code in CODES.items()}
_HOST = re.compile(r"([prsfxulck])([0-9]{1,19})", re.ASCII)


class InvalidCursor(ValueError):
    """A run stream's Last-Event-ID that cannot be read, or is for another run."""


@dataclass
class HostCursor:
    """How far a stream has got with one host."""

    state: str = "pending"
    offset: int = 0


@dataclass
class RunCursor:
    """How far a stream has got with a whole run."""

    hosts: list[HostCursor]
    ended: bool = False

    @classmethod
    def start(cls, count: int) -> RunCursor:
        """Before anything of a run of ``count`` hosts."""
        return cls([HostCursor() for _ in range(count)])

    def format(self) -> str:
        """As an event id."""
        return ("E." if self.ended else "R.") + ".".join(f"{CODES[h.state]}{h.offset}" for h in self.hosts)


def parse_cursor(text: str | None, count: int) -> RunCursor:
    """A cursor from a Last-Event-ID for a run of ``count`` hosts; the start for none (or empty)."""
    if not text:
        return RunCursor.start(count)
    head, _, rest = text.partition(".")
    parts = rest.split(".") if rest else []
    if head not in ("R", "E") or len(parts) != count:
        raise InvalidCursor("Last-Event-ID is not an event id of this run's stream")
    hosts = []
    for part in parts:
        match = _HOST.fullmatch(part)
        if match is None:
            raise InvalidCursor("Last-Event-ID is not an event id of this run's stream")
        hosts.append(HostCursor(STATES[match[1]], int(match[2])))
    return RunCursor(hosts, ended=head == "E")
