"""Where configuration values come from: file discovery, TOML reading, command-line overrides.

This module owns turning outside input into a validated `Config`:

1. the file: `--config FILE`, else `$OVERHOP_CONFIG`, else `./overhop.toml`,
   else `~/.overhop/config.toml`, else `/etc/overhop/config.toml`, else built-in defaults;
2. overrides: leftover command-line words `--section.key VALUE` or `--section.key=VALUE`,
   parsed by the type of the key they override, applied over the file;
3. `overhop.config.schema.validate_config` on the result.

Every failure is a `ConfigError` whose str() is one line naming the key or the file.
"""

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from overhop.config.schema import SECTIONS, SETTINGS, Config, Setting, build_config, validate_config
from overhop.config.sections import ConfigError, expand_home

__all__ = [
    "SYSTEM_CONFIG_PATH",
    "ConfigError",
    "LoadedConfig",
    "discover_config_file",
    "dump_config_toml",
    "load_config",
    "parse_overrides",
    "read_config_file",
]

ENV_VAR = "OVERHOP_CONFIG"
CWD_CONFIG_NAME = "overhop.toml"
USER_CONFIG_PATH = ".overhop/config.toml"  # under HOME
SYSTEM_CONFIG_PATH = Path("/etc/overhop/config.toml")
DEFAULTS_SOURCE = "defaults"

_INT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*")
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True)
class LoadedConfig:
    """A validated Config and where it came from: the file's path, or "defaults"."""

    config: Config
    source: str


def load_config(
    config_file: str | None,
    overrides: Sequence[str],
    *,
    environ: Mapping[str, str] = os.environ,
    cwd: Path | None = None,
    system_path: Path = SYSTEM_CONFIG_PATH,
) -> LoadedConfig:
    """Discover and read the config file, apply `overrides`, validate; see the module doc."""
    base = Path.cwd() if cwd is None else cwd
    path = discover_config_file(config_file, environ=environ, cwd=base, system_path=system_path)
    values: dict[str, object] = {} if path is None else read_config_file(path)
    values.update(parse_overrides(overrides))
    config = build_config(values)
    validate_config(config)
    return LoadedConfig(config=config, source=DEFAULTS_SOURCE if path is None else str(path))


def discover_config_file(
    config_file: str | None,
    *,
    environ: Mapping[str, str],
    cwd: Path,
    system_path: Path = SYSTEM_CONFIG_PATH,
) -> Path | None:
    """The config file to read, or None for defaults.

    A file named explicitly (argument or $OVERHOP_CONFIG) must exist; the conventional
    locations are used only if they hold a file.
    """
    if config_file is not None:
        return _explicit(config_file, "config file", environ, cwd)
    if environ.get(ENV_VAR):
        return _explicit(environ[ENV_VAR], f"${ENV_VAR}", environ, cwd)
    candidates = [cwd / CWD_CONFIG_NAME]
    if environ.get("HOME"):
        candidates.append(Path(environ["HOME"]) / USER_CONFIG_PATH)
    candidates.append(system_path)
    return next((c for c in candidates if c.is_file()), None)


def _explicit(name: str, origin: str, environ: Mapping[str, str], cwd: Path) -> Path:
    if not name:
        raise ConfigError(f"{origin}: empty file name")
    path = cwd / expand_home(name, environ, key=origin)
    if not path.exists():
        raise ConfigError(f"{origin} {str(path)!r} does not exist")
    if path.is_dir():
        raise ConfigError(f"{origin} {str(path)!r} is a directory")
    return path


def read_config_file(path: Path) -> dict[str, object]:
    """The keys set in the TOML file at `path`, by dotted path, type- and range-checked."""
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: invalid TOML: the file is not UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    values: dict[str, object] = {}
    try:
        _flatten(document, "", values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return values


def _flatten(table: Mapping[str, Any], prefix: str, out: dict[str, object]) -> None:
    for name, value in table.items():
        key = prefix + name
        if "." not in name and key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a table, got {_describe(value)}")
            _flatten(value, key + ".", out)
        elif "." not in name and key in SETTINGS:
            setting = SETTINGS[key]
            if type(value) is not setting.type:
                raise ConfigError(
                    f"{key}: expected {setting.expected}, got {_describe(value)}")
            setting.check(value)
            out[key] = value
        elif isinstance(value, dict):
            raise ConfigError(f"unknown config section {key!r}")
        else:
            raise ConfigError(f"unknown config key {key!r}")


def _describe(value: object) -> str:
    """A TOML value as an error message shows it: its TOML type, then the value."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value}"


def parse_overrides(words: Sequence[str]) -> dict[str, object]:
    """Dotted keys and typed values from `--section.key VALUE` / `--section.key=VALUE` words.

    A value that itself starts with "--" must use the `=` form.
    """
    values: dict[str, object] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--"):
            raise ConfigError(
                f"unexpected argument {word!r}: overrides look like --section.key VALUE")
        key, eq, raw = word[2:].partition("=")
        setting = _lookup(key)
        if eq:
            i += 1
        elif i + 1 < len(words) and not words[i + 1].startswith("--"):
            raw = words[i + 1]
            i += 2
        else:
            raise ConfigError(f"{key}: missing value")
        values[key] = _parse_value(setting, raw)
    return values


def _lookup(key: str) -> Setting:
    if key not in SETTINGS:
        raise ConfigError(f"unknown config key {key!r}")
    return SETTINGS[key]


def _parse_value(setting: Setting, raw: str) -> object:
    value: object
    if setting.type is int:
        if not _INT.fullmatch(raw):
            raise ConfigError(f"{setting.key}: expected an integer, got {raw!r}")
        value = int(raw)
    elif setting.type is bool:
        if raw.lower() not in _BOOLS:
            raise ConfigError(
                f"{setting.key}: expected a boolean (true/false/yes/no/1/0), got {raw!r}")
        value = _BOOLS[raw.lower()]
    else:
        value = raw
    setting.check(value)
    return value


def dump_config_toml(config: Config) -> str:
    """Every key of `config` as TOML, one table per section; reads back to an equal Config."""
    return tomli_w.dumps(dataclasses.asdict(config))
