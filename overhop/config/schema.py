"""The configuration schema: every key, its type, default, allowed range and meaning.

This module owns what a valid configuration *is*. Each TOML section is a frozen dataclass
whose fields carry their limits in `dataclasses.field` metadata (made by `setting`);
`SETTINGS` is the flat, ordered view of all keys by dotted TOML path, and
`validate_config` checks a whole `Config`, including the checks that span keys.
Where values come from (files, command-line overrides) is `overhop.config.loading`'s job.

A `Config` built in code is not validated on construction, so tests may use values outside
the ranges; `load_config` always validates.
"""

import dataclasses
import ipaddress
import os
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overhop.config.sections import (
    AuthConfig,
    ClusterConfig,
    ConfigError,
    DispatchConfig,
    HeartbeatConfig,
    HttpConfig,
    JobsConfig,
    LoggingConfig,
    PaginationConfig,
    QueuesConfig,
    SchedulesConfig,
    ServerConfig,
    ShutdownConfig,
    StorageConfig,
    WireConfig,
    WorkerConfig,
)


@dataclass(frozen=True)
class Config:
    """The whole configuration, one attribute per TOML section."""

    logging: LoggingConfig = field(default_factory=LoggingConfig)
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    wire: WireConfig = field(default_factory=WireConfig)
    queues: QueuesConfig = field(default_factory=QueuesConfig)
    schedules: SchedulesConfig = field(default_factory=SchedulesConfig)
    pagination: PaginationConfig = field(default_factory=PaginationConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    http: HttpConfig = field(default_factory=HttpConfig)

    def storage_path(self, environ: Mapping[str, str] = os.environ) -> Path:
        """The resolved data directory (see `StorageConfig.resolved_path`)."""
        return self.storage.resolved_path(environ)

    def self_debug_path(self, environ: Mapping[str, str] = os.environ) -> Path:
        """The resolved self-debug directory (see `StorageConfig.resolved_self_debug_path`)."""
        return self.storage.resolved_self_debug_path(environ)


@dataclass(frozen=True)
class Setting:
    """One config key: its dotted TOML path, Python type, default and limits."""

    key: str
    type: type
    default: int | bool | str
    doc: str
    minimum: int | None
    maximum: int | None
    choices: tuple[str, ...] | None
    nonempty: bool

    @property
    def type_name(self) -> str:
        """The type as the docs spell it: int, bool or str."""
        return {int: "int", bool: "bool", str: "str"}[self.type]

    @property
    def expected(self) -> str:
        """The type as error messages spell it: "an integer", "a boolean", "a string"."""
        return {int: "an integer", bool: "a boolean", str: "a string"}[self.type]

    def limits(self) -> str:
        """The allowed values in words: "100..1000", "one of a, b", or ""."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.minimum is not None and self.maximum is not None:
            return f"{self.minimum}..{self.maximum}"
        return "non-empty" if self.nonempty else ""

    def check(self, value: object) -> None:
        """Raise ConfigError unless `value` has this key's type and lies within its limits."""
        if type(value) is not self.type:
            raise ConfigError(f"{self.key}: expected {self.expected}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.key}: {value!r} is not {self.limits()}")
        if type(value) is int and (
            (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
        ):
            raise ConfigError(f"{self.key}: {value} is out of range {self.limits()}")
        if self.nonempty and value == "":
            raise ConfigError(f"{self.key}: must not be empty")


def _walk(cls: type, prefix: str) -> Iterator[tuple[str, type, dataclasses.Field[Any]]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield prefix + f.name, hints[f.name], f


def _collect(cls: type, prefix: str, settings: dict[str, Setting], sections: set[str]) -> None:
    for key, kind, f in _walk(cls, prefix):
        if dataclasses.is_dataclass(kind):
            sections.add(key)
            _collect(kind, key + ".", settings, sections)
        else:
            meta = f.metadata
            default = typing.cast("int | bool | str", f.default)
            settings[key] = Setting(key=key, type=kind, default=default, doc=meta["doc"],
                                    minimum=meta["min"], maximum=meta["max"],
                                    choices=meta["choices"], nonempty=meta["nonempty"])


def _build_index() -> tuple[dict[str, Setting], frozenset[str]]:
    settings: dict[str, Setting] = {}
    sections: set[str] = set()
    _collect(Config, "", settings, sections)
    return settings, frozenset(sections)


SETTINGS, SECTIONS = _build_index()
"""SETTINGS: every key by dotted path, in schema order. SECTIONS: every dotted section path."""


def build_config(values: Mapping[str, object]) -> Config:
    """A Config with the given dotted-key values and defaults elsewhere (values unchecked)."""
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}")
    config: Config = _build(Config, "", values)
    return config


def _build(cls: type, prefix: str, values: Mapping[str, object]) -> Any:
    kwargs: dict[str, Any] = {}
    for key, kind, f in _walk(cls, prefix):
        if dataclasses.is_dataclass(kind):
            kwargs[f.name] = _build(kind, key + ".", values)
        elif key in values:
            kwargs[f.name] = values[key]
    return cls(**kwargs)


def config_values(config: Config) -> dict[str, object]:
    """Every key of `config` by dotted path, in schema order."""
    values: dict[str, object] = {}
    for key in SETTINGS:
        node: Any = config
        for part in key.split("."):
            node = getattr(node, part)
        values[key] = node
    return values


def validate_config(config: Config) -> None:
    """Raise ConfigError for the first key out of its limits or the first broken rule."""
    for key, value in config_values(config).items():
        SETTINGS[key].check(value)
    tls = config.server.tls
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("server.tls.cert_file and server.tls.key_file go together: set both "
                          "to serve TLS, or neither")
    if tls.client_ca_file and not tls.cert_file:
        raise ConfigError("server.tls.client_ca_file needs server.tls.cert_file and key_file")
    server, storage, pages = config.server, config.storage, config.pagination
    if storage.engine == "postgres" and not storage.postgres.dsn.strip():
        raise ConfigError('storage.postgres.dsn: required when storage.engine is "postgres" '
                          "(e.g. postgresql://overhop@localhost/overhop)")
    cluster = config.cluster
    if cluster.node_id and storage.engine != "postgres":
        raise ConfigError('cluster.node_id: a cluster needs storage.engine = "postgres" '
                          "(the brokers share its database)")
    if cluster.renew_ms * 2 > cluster.lease_ms:
        raise ConfigError(f"cluster.renew_ms ({cluster.renew_ms}) must be at most half of "
                          f"cluster.lease_ms ({cluster.lease_ms})")
    if cluster.node_id and not cluster.advertise and server.host in ("0.0.0.0", "::", ""):
        raise ConfigError("cluster.advertise: required when server.host is a wildcard "
                          "address (clients must be told where this broker is)")
    if server.write_buffer_max_bytes <= server.write_buffer_high_bytes:
        raise ConfigError(
            f"server.write_buffer_max_bytes ({server.write_buffer_max_bytes}) must be greater"
            f" than server.write_buffer_high_bytes ({server.write_buffer_high_bytes})")
    wire = config.wire
    if wire.max_buffered_input_bytes < 2 * wire.max_envelope_size_bytes:
        raise ConfigError(
            f"wire.max_buffered_input_bytes ({wire.max_buffered_input_bytes}) must be at least"
            f" twice wire.max_envelope_size_bytes ({wire.max_envelope_size_bytes})")
    if storage.max_map_size_bytes < storage.initial_map_size_bytes:
        raise ConfigError(
            f"storage.max_map_size_bytes ({storage.max_map_size_bytes}) must be at least"
            f" storage.initial_map_size_bytes ({storage.initial_map_size_bytes})")
    if storage.reserved_headroom_bytes >= storage.max_map_size_bytes:
        raise ConfigError(
            f"storage.reserved_headroom_bytes ({storage.reserved_headroom_bytes}) must be less"
            f" than storage.max_map_size_bytes ({storage.max_map_size_bytes})")
    if storage.self_debug_path and storage.self_debug_path == storage.path:
        raise ConfigError("storage.self_debug_path must differ from storage.path: self-debug "
                          "wipes its storage")
    if pages.page_size > pages.max_page_size:
        raise ConfigError(
            f"pagination.page_size ({pages.page_size}) must not exceed"
            f" pagination.max_page_size ({pages.max_page_size})")
    http = config.http
    if http.enabled and not http.allow_non_loopback and not is_loopback(http.host):
        raise ConfigError(
            f"http.host {http.host!r} is not a loopback address: the dashboard has no users "
            "yet; set http.allow_non_loopback = true to serve it there anyway")


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
