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

