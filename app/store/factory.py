"""Which store the settings ask for: history on disk (the default), or memory only (``history = false``)."""

from __future__ import annotations

from ..config import Settings
from .base import Store
from .memory import MemoryStore


def store_from_settings(settings: Settings) -> Store:
    """The embedded store: ``HistoryStore`` in ``data_dir`` with ``history`` on, else ``MemoryStore``."""
    if not settings.history:
        return MemoryStore.from_settings(settings)
    from .history.datadir import resolve_data_dir
    from .history.store import HistoryStore

    return HistoryStore(settings, resolve_data_dir(settings.data_dir))
