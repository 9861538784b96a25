"""Overhop configuration: the schema (`schema`) and where its values come from (`loading`)."""

from overhop.config.loading import (
    LoadedConfig,
    discover_config_file,
    dump_config_toml,
    load_config,
    parse_overrides,
)
from overhop.config.schema import SETTINGS, Config, Setting, validate_config
from overhop.config.sections import ConfigError

__all__ = [
    "SETTINGS",
    "Config",
    "ConfigError",
    "LoadedConfig",
    "Setting",
    "discover_config_file",
    "dump_config_toml",
    "load_config",
    "parse_overrides",
    "validate_config",
]
