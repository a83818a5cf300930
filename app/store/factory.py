"""The store the settings ask for: this worker's memory (``store_url`` empty), or a shared Redis."""

from __future__ import annotations

from ..config import Settings
from .base import Store
from .memory import MemoryStore


def make_store(settings: Settings) -> Store:
    """MemoryStore, or RedisStore for a ``redis://``, ``rediss://`` or ``unix://`` store_url."""
    if not settings.store_url:
        return MemoryStore.from_settings(settings)
    # Imported only here: redis must be imported after gevent has patched the sockets (gunicorn's worker does).
    from .redis.store import RedisStore

    return RedisStore(settings)


def describe_backend(settings: Settings) -> str:
    """The backend in words, for ``sse-commander settings`` and the logs (no password shown)."""
    if not settings.store_url:
        return "memory (this worker)"
    scheme, _, rest = settings.store_url.partition("://")
    return f"redis ({scheme}://{rest.rpartition('@')[2]}, host {settings.host_name})"
