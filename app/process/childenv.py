"""The environment a command sees: built from settings, never inherited wholesale."""

from __future__ import annotations

from collections.abc import Mapping

from ..config import Settings


def child_environment(settings: Settings, server_env: Mapping[str, str]) -> dict[str, str]:
    """PATH, LANG, HOME, PYTHONUNBUFFERED, the allowlisted server variables and fixed values."""
    env = {
        "PATH": settings.child_path,
        "LANG": settings.child_lang,
        "HOME": settings.child_home,
        "PYTHONUNBUFFERED": "1",
    }
    for name in settings.env_passthrough:
        if name in server_env:
            env[name] = server_env[name]
    env.update(settings.env_set)
    return env
