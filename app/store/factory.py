"""The store the settings ask for: a shared Redis (``store_url``), else history on disk (the default), or
this worker's memory only (``history = false``)."""

from __future__ import annotations

from ..config import Settings
from .base import Store
from .memory import MemoryStore


def make_store(settings: Settings) -> Store:
    """RedisStore for a ``store_url`` (history is then Redis's), else ``HistoryStore`` in ``data_dir`` with
    ``history`` on, else ``MemoryStore``."""
    if settings.store_url:
        # Imported only here: redis must be imported after gevent has patched the sockets (gunicorn's worker does).
        from .redis.store import RedisStore

        return RedisStore(settings)
    if not settings.history:
        return MemoryStore.from_settings(settings)
    from .history.datadir import resolve_data_dir
    from .history.store import HistoryStore

    return HistoryStore(settings, resolve_data_dir(settings.data_dir))
