"""YAML configurations merged over defaults; an unknown key is an error that names it."""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file is malformed or has an unknown or ill-typed key."""


def merge(defaults: dict, user: dict | None, where: str = "") -> dict:
    """Recursively merge ``user`` over ``defaults``.

    Keys of ``user`` must exist in ``defaults``; nested dicts merge recursively, any other
    value replaces the default.  A default of ``None`` accepts any value; a list of dicts
    in the defaults is replaced whole.

    Raises
    ------
    ConfigError
        On a key that ``defaults`` does not have, naming its dotted path and the allowed keys.
    """
    out = copy.deepcopy(defaults)
    if user is None:
        return out
    if not isinstance(user, dict):
        raise ConfigError(f"`{where or 'config'}` must be a mapping. Received: {user!r}")
    for key, value in user.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in defaults:
            allowed = ", ".join(sorted(map(str, defaults)))
            raise ConfigError(f"Unknown config key `{path}`. Allowed keys here: {allowed}")
        if isinstance(defaults[key], dict) and defaults[key] and value is not None:
            out[key] = merge(defaults[key], value, path)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError as err:
        raise ConfigError(f"Config file not found: {path}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {path} must hold a mapping at top level. Received: {data!r}"
        )
    return data


def require(value: Any, kind: type | tuple, path: str) -> Any:
    """Check the type of a config value, naming its key on error."""
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"`{path}` must be {names}. Received: {value!r}")
    return value
