"""Process-wide shutdown signal, set by the gunicorn worker on TERM/HUP.

The worker learns of a graceful shutdown in a signal handler; the app learns
of it here. Streams wait on ``shutdown_event`` and end with a jittered
``retry:``; the runner stops every job.
"""

from __future__ import annotations

from collections.abc import Callable

from gevent.event import Event

shutdown_event = Event()
_on_shutdown: list[Callable[[], None]] = []
_wait_idle: list[Callable[[float], None]] = []


def on_shutdown(callback: Callable[[], None], wait_idle: Callable[[float], None] | None = None) -> None:
    """Run ``callback`` when shutdown begins; ``wait_idle`` lets the worker wait for it to finish."""
    _on_shutdown.append(callback)
    if wait_idle is not None:
        _wait_idle.append(wait_idle)


def begin_shutdown() -> None:
    """Wake every stream and stop every job (call from a greenlet, not a signal handler)."""
    if shutdown_event.is_set():
        return
    shutdown_event.set()
    for callback in list(_on_shutdown):
        callback()


def wait_idle(timeout: float) -> None:
    """Wait, up to ``timeout`` seconds, until stopped jobs have been reaped."""
    for waiter in list(_wait_idle):
        waiter(timeout)
