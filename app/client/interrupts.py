"""Ctrl-C that never tears an event in half, nor loses the id of a job just started."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class CtrlC:
    """SIGINT raises KeyboardInterrupt at once (even out of a blocked read), except while it is deferred."""

    def __init__(self) -> None:
        self._depth = 0
        self._pending = False

    def install(self) -> None:
        """Take over SIGINT, unless it is ignored (a background job of a script keeps ignoring it)."""
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._depth:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A block Ctrl-C does not interrupt; a Ctrl-C during it waits for ``raise_pending()``."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def raise_pending(self) -> None:
        """Raise the KeyboardInterrupt of a Ctrl-C that came while deferred, if any."""
        if self._pending and not self._depth:
            self._pending = False
            raise KeyboardInterrupt

    @contextmanager
    def held(self) -> Iterator[None]:
        """A block Ctrl-C does not interrupt; a Ctrl-C during it is raised when it ends."""
        with self.deferred():
            yield
        self.raise_pending()
