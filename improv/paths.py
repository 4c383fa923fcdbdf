"""Where improv looks for its config and keeps its sessions, per user and platform. Pure: no I/O."""

from __future__ import annotations

import os
import sys
from pathlib import Path

CONFIG_NAME = "config.yaml"


def user_config_dir() -> Path:
    """~/.config/improv on Linux (or $XDG_CONFIG_HOME/improv), the platform's equivalent elsewhere."""
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "improv"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "improv"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "improv"


def user_data_dir() -> Path:
    """~/.local/share/improv on Linux (or $XDG_DATA_HOME/improv), the platform's equivalent elsewhere."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "improv"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "improv"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "improv"


def default_sessions_dir() -> Path:
    return user_data_dir() / "sessions"


def config_candidates(explicit: str | os.PathLike | None) -> list[Path]:
    """The config files improv reads, first found wins: --config, ./config.yaml, the user's."""
    if explicit is not None:
        return [Path(explicit)]
    return [Path.cwd() / CONFIG_NAME, user_config_dir() / CONFIG_NAME]
