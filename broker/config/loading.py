"""Reading the settings: the YAML file over the embedded defaults, ``section.key=value``
overrides, ``${CREDENTIALS_DIRECTORY}`` in file settings."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from broker.config import ConfigError, Settings
from broker.config.checks import check


class _Loader(yaml.SafeLoader):
    """YAML with only true/false as booleans (so `synchronous: OFF` stays the text OFF)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_settings(path: str | Path | None = None) -> Settings:
    """Embedded defaults, overridden by the YAML file when one is given."""
    if path is None:
        return Settings()
    with open(path, encoding="utf-8") as fh:
        data = _yaml(fh.read()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    settings: Settings = _build(Settings, data, str(path))
    expand_credentials(settings, str(path))
    check(settings, str(path))
    return settings


_CREDENTIALS = re.compile(r"\$\{CREDENTIALS_DIRECTORY\}|\$CREDENTIALS_DIRECTORY\b")


def expand_credentials(settings: Any, where: str, label: str = "") -> None:
    """Replace ``${CREDENTIALS_DIRECTORY}`` in every ``*_file`` setting by the folder systemd
    passes secrets in (``LoadCredential=``): readable by the service's user only, so a token
    or TLS key need not be world-readable under ``DynamicUser``."""
    import os

    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        name = f"{label}{f.name}"
        if dataclasses.is_dataclass(value):
            expand_credentials(value, where, f"{name}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    expand_credentials(item, where, f"{name}[{i}].")
        elif f.name.endswith("_file") and isinstance(value, str) and _CREDENTIALS.search(value):
            folder = os.environ.get("CREDENTIALS_DIRECTORY", "")
            if not folder:
                raise ConfigError(f"{where}: {name} {value!r} names $CREDENTIALS_DIRECTORY, "
                                  "which is not set (systemd sets it for a unit with "
                                  "LoadCredential=; elsewhere give the file's path)")
            setattr(settings, f.name, _CREDENTIALS.sub(folder.replace("\\", "\\\\"), value))


def _build(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown setting {key!r}{hint}")
        kwargs[key] = _convert(hints[key], value, f"{where}: {key}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping")
        return _build(tp, value, where)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        (item,) = get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping")
        return {str(k): str(v) for k, v in value.items()}
    if origin in (Union, types.UnionType):
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number")
        return tp(value)
    if tp is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{where} must be a text value")
        return "" if value is None else str(value)
    return value


def apply_overrides(settings: Settings, overrides: list[str]) -> Settings:
    """Apply ``section.key=value`` overrides (values read as YAML scalars)."""
    for item in overrides:
        name, sep, text = item.partition("=")
        *path, key = name.strip().split(".")
        section = ".".join(path)
        shown = f"{name.strip()}=…" if sep else item  # a value may be a secret: never echo it
        if not sep or not key:
            raise ConfigError(f"override {shown!r} must look like section.key=value")
        target: Any = settings
        for part in path:  # dicom.ups.subscribers: a section inside a section
            target = getattr(target, part, None)
            if target is None or not dataclasses.is_dataclass(target):
                raise ConfigError(f"override {shown!r}: unknown section {section!r}")
        hints = get_type_hints(type(target))
        if key not in hints or (not path and dataclasses.is_dataclass(getattr(target, key))):
            raise ConfigError(f"override {shown!r}: unknown setting {name.strip()} (a "
                              "section's settings are section.key=value)")
        value = _convert(hints[key], _yaml(text), f"override {name}")
        setattr(target, key, value)
    if overrides:
        expand_credentials(settings, "overrides")
        check(settings, "overrides")
    return settings
