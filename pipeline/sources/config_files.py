"""Loading any stage's pydantic config: defaults, then a TOML/YAML/JSON file, then
overrides (the command line's options), each merged over the last."""

from __future__ import annotations

import json
import tomllib
import warnings
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, model_validator

Config = TypeVar("Config", bound=BaseModel)


def load_config(
    model: type[Config],
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> Config:
    """`model` validated from `base` (a recipe's settings), then `file`, then `overrides`.

    Nested mappings merge key by key, so an override of one optimiser setting keeps
    the file's others. Unknown keys are refused by the models (extra="forbid").
    """
    merged = dict(base or {})
    if file is not None:
        merged = deep_merge(merged, read_config_file(file))
    return model.model_validate(deep_merge(merged, overrides or {}))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A configuration mapping from a .toml, .yaml/.yml or .json file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such configuration file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text ({error.reason} at byte offset {error.start}); save the "
            "file as UTF-8"
        ) from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"{path}: use a .toml, .yaml or .json configuration file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings at the top level")
    return data


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def renamed_key(old: str, new: str) -> Any:
    """A pydantic "before" validator that takes the deprecated config key `old` as `new`,
    with a warning; kept for one release after a rename. In a model:
    `_old_names = renamed_key("preset", "size")`."""

    def rename(cls: type, data: Any) -> Any:
        if isinstance(data, dict) and old in data:
            if new in data:
                raise ValueError(f"give {new!r} only: {old!r} is its deprecated name")
            warnings.warn(
                f"the config key {old!r} is now {new!r}; {old!r} will stop working in the "
                "next release",
                FutureWarning,
                stacklevel=2,
            )
            data = {new if key == old else key: value for key, value in data.items()}
        return data

    return model_validator(mode="before")(rename)
