"""Persistent user settings shared by the CLI and the window (a small JSON file).

Location: the platform's user config directory, or `$THOUGHTSCOPE_CONFIG_DIR` when set
(tests point it at a temporary directory). A damaged file is set aside, never fatal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import platformdirs

APP_NAME = "thoughtscope"


def config_dir() -> Path:
    override = os.environ.get("THOUGHTSCOPE_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME))


def data_dir() -> Path:
    override = os.environ.get("THOUGHTSCOPE_DATA_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME))


def _settings_path() -> Path:
    return config_dir() / "settings.json"


def load_settings() -> dict[str, Any]:
    path = _settings_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        # keep the damaged file for inspection, start from defaults
        path.replace(path.with_suffix(".json.bad"))
        return {}
    return data if isinstance(data, dict) else {}


def save_setting(key: str, value: Any) -> None:
    settings = load_settings()
    settings[key] = value
    path = _settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    tmp.replace(path)


def requested_choice(
    value: str | None, *, flag: str, env: str, setting: str, choices: tuple[str, ...],
    default: str = "auto",
) -> str:
    """The first set of: the argument (`flag` on the command line), `$env`, the setting
    `setting`, else `default`; a value outside `choices` is a one-line ParameterError."""
    from engine.errors import ParameterError

    for candidate, where in (
        (value, flag),
        (os.environ.get(env), f"${env}"),
        (load_settings().get(setting), f"the setting {setting}"),
    ):
        if candidate:
            if candidate not in choices:
                raise ParameterError(
                    f"{where} must be one of {', '.join(choices)}, got {candidate!r}"
                )
            return str(candidate)
    return default
