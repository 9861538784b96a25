"""Config schema, discovery, TOML and override parsing, validation, paths and the docs table."""

import dataclasses
import re
import tempfile
import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from overhop.config import (
    SETTINGS,
    Config,
    ConfigError,
    LoadedConfig,
    discover_config_file,
    dump_config_toml,
    load_config,
    parse_overrides,
    validate_config,
)
from overhop.config.loading import read_config_file
from overhop.config.schema import SECTIONS, build_config, config_values

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    path = tmp_path / "cwd"
    path.mkdir()
    return path


@pytest.fixture
def system(tmp_path: Path) -> Path:
    return tmp_path / "etc" / "overhop" / "config.toml"


def load(
    cwd: Path,
    system: Path,
    overrides: list[str] | None = None,
    *,
    config_file: str | None = None,
    environ: dict[str, str] | None = None,
) -> LoadedConfig:
    return load_config(config_file, overrides or [], environ=environ or {}, cwd=cwd,
                       system_path=system)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(cwd: Path, system: Path, overrides: list[str] | None = None, **kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        load(cwd, system, overrides, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


# --- schema ---------------------------------------------------------------------------------


def test_defaults_are_valid_and_match_the_spec() -> None:
    config = Config()
    validate_config(config)
    assert config.logging.level == "info"
    assert config.server.port == 9876
    assert config.wire.session.ident_register_timeout_seconds == 2
    assert config.storage.max_map_size_bytes == 64 * 1024**3
    assert config.storage.self_debug_path == ""
    assert config.server.host == "127.0.0.1"  # safe by default (docs/security.md)
    assert len(SETTINGS) == 61  # cluster.node_id, advertise, lease_ms and renew_ms joined the 57


def test_every_setting_has_a_doc_and_ints_have_a_range() -> None:
    for setting in SETTINGS.values():
        assert setting.doc
        if setting.type is int:
            assert setting.minimum is not None
            assert setting.maximum is not None
            assert setting.minimum <= setting.default <= setting.maximum  # type: ignore[operator]


def test_sections_are_the_toml_tables() -> None:
    assert {
        "logging", "heartbeat", "server", "server.tls", "auth", "wire", "wire.session", "queues",
        "schedules",
        "pagination", "storage", "storage.postgres", "cluster", "dispatch", "jobs", "worker",
            "shutdown",
        "http",
    } == SECTIONS


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().server.port = 1  # type: ignore[misc]


def test_build_config_refuses_unknown_keys() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"server.prot": 1})
    assert str(info.value) == "unknown config key 'server.prot'"


def test_config_error_is_always_one_line() -> None:
    assert str(ConfigError("a\nb\n  c")) == "a b c"


# --- discovery ------------------------------------------------------------------------------


def test_no_file_anywhere_gives_defaults(cwd: Path, system: Path, home: Path) -> None:
    loaded = load(cwd, system, environ={"HOME": str(home)})
    assert loaded == LoadedConfig(config=Config(), source="defaults")


def test_discovery_order(cwd: Path, system: Path, home: Path, tmp_path: Path) -> None:
    explicit = write(tmp_path / "explicit.toml", "[server]\nport = 1\n")
    from_env = write(tmp_path / "env.toml", "[server]\nport = 2\n")
    in_cwd = write(cwd / "overhop.toml", "[server]\nport = 3\n")
    in_home = write(home / ".overhop" / "config.toml", "[server]\nport = 4\n")
    write(system, "[server]\nport = 5\n")
    environ = {"HOME": str(home), "OVERHOP_CONFIG": str(from_env)}

    def port_and_source() -> tuple[int, str]:
        loaded = load(cwd, system, config_file=config_file, environ=environ)
        return loaded.config.server.port, loaded.source

    config_file: str | None = str(explicit)
    assert port_and_source() == (1, str(explicit))
    config_file = None
    assert port_and_source() == (2, str(from_env))
    del environ["OVERHOP_CONFIG"]
    assert port_and_source() == (3, str(in_cwd))
    in_cwd.unlink()
    assert port_and_source() == (4, str(in_home))
    in_home.unlink()
    assert port_and_source() == (5, str(system))
    system.unlink()
    assert port_and_source() == (9876, "defaults")


def test_empty_overhop_config_variable_is_ignored(cwd: Path, system: Path) -> None:
    write(cwd / "overhop.toml", "[server]\nport = 3\n")
    assert load(cwd, system, environ={"OVERHOP_CONFIG": ""}).config.server.port == 3


def test_home_candidate_skipped_without_home(cwd: Path, system: Path) -> None:
    assert discover_config_file(None, environ={}, cwd=cwd, system_path=system) is None


def test_conventional_location_that_is_a_directory_is_skipped(cwd: Path, system: Path) -> None:
    (cwd / "overhop.toml").mkdir()
    assert discover_config_file(None, environ={}, cwd=cwd, system_path=system) is None


def test_explicit_relative_and_home_paths(cwd: Path, system: Path, home: Path) -> None:
    write(cwd / "conf" / "a.toml", "[server]\nport = 11\n")
    write(home / "b.toml", "[server]\nport = 12\n")
    environ = {"HOME": str(home)}
    relative = load(cwd, system, config_file="conf/a.toml", environ=environ)
    assert relative.source == str(cwd / "conf" / "a.toml")
    assert relative.config.server.port == 11
    assert load(cwd, system, config_file="~/b.toml", environ=environ).config.server.port == 12
    via_env = load(cwd, system, environ={"HOME": str(home), "OVERHOP_CONFIG": "$HOME/b.toml"})
    assert via_env.source == str(home / "b.toml")


def test_explicit_missing_file_is_an_error(cwd: Path, system: Path) -> None:
    write(cwd / "overhop.toml", "")  # present, but an explicit file wins and is missing
    message = error_of(cwd, system, config_file="nope.toml")
    assert message == f"config file {str(cwd / 'nope.toml')!r} does not exist"


def test_missing_file_named_by_environment_is_an_error(cwd: Path, system: Path) -> None:
    message = error_of(cwd, system, environ={"OVERHOP_CONFIG": "/no/such.toml"})
    assert message == "$OVERHOP_CONFIG '/no/such.toml' does not exist"


def test_explicit_directory_is_an_error(cwd: Path, system: Path) -> None:
    message = error_of(cwd, system, config_file=str(cwd))
    assert message == f"config file {str(cwd)!r} is a directory"


def test_explicit_empty_name_is_an_error(cwd: Path, system: Path) -> None:
    assert error_of(cwd, system, config_file="") == "config file: empty file name"


def test_dev_null_gives_defaults(cwd: Path, system: Path) -> None:
    loaded = load(cwd, system, config_file="/dev/null")
    assert loaded == LoadedConfig(config=Config(), source="/dev/null")


# --- the TOML file --------------------------------------------------------------------------


def test_file_values_are_applied(cwd: Path, system: Path) -> None:
    write(cwd / "overhop.toml", """
[logging]
level = "verbose"
human_friendly = true

[wire.session]
ident_register_timeout_seconds = 3

[storage]
path = "/var/lib/overhop"
sync = false
""")
    config = load(cwd, system).config
    assert config.logging == dataclasses.replace(
        Config().logging, level="verbose", human_friendly=True)
    assert config.wire.session.ident_register_timeout_seconds == 3
    assert config.wire.session.unhelloed_max_lifetime_seconds == 10
    assert config.storage.path == "/var/lib/overhop"
    assert config.storage.sync is False


def test_toml_syntax_error_names_file_and_line(cwd: Path, system: Path) -> None:
    path = write(cwd / "overhop.toml", "[server]\nport = 1\n[broken\n")
    message = error_of(cwd, system)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "line 3" in message


def test_file_that_is_not_utf8(cwd: Path, system: Path) -> None:
    path = cwd / "overhop.toml"
    path.write_bytes(b'[storage]\npath = "\xff"\n')
    assert error_of(cwd, system) == f"{path}: invalid TOML: the file is not UTF-8"


@pytest.mark.parametrize(("text", "expected"), [
    ("[sever]\nport = 1\n", "unknown config section 'sever'"),
    ("[wire.sesion]\nx = 1\n", "unknown config section 'wire.sesion'"),
    ("[server]\nprot = 1\n", "unknown config key 'server.prot'"),
    ("port = 1\n", "unknown config key 'port'"),
    ('"server.port" = 1\n', "unknown config key 'server.port'"),
    ("[server.port]\nx = 1\n", "server.port: expected an integer, got a table"),
    ("server = 1\n", "server: expected a table, got integer 1"),
    ("wire = { session = 1 }\n", "wire.session: expected a table, got integer 1"),
    ('[server]\nport = "7000"\n', "server.port: expected an integer, got string '7000'"),
    ("[server]\nport = true\n", "server.port: expected an integer, got boolean true"),
    ("[server]\nport = 70.5\n", "server.port: expected an integer, got float 70.5"),
    ("[server]\nport = [1]\n", "server.port: expected an integer, got an array"),
    ("[storage]\nsync = 1\n", "storage.sync: expected a boolean, got integer 1"),
    ('[storage]\nsync = "yes"\n', "storage.sync: expected a boolean, got string 'yes'"),
    ("[storage]\npath = 1\n", "storage.path: expected a string, got integer 1"),
    ("[server]\nport = 65536\n", "server.port: 65536 is out of range 0..65535"),
    ("[heartbeat]\ninterval_ms = 50\n", "heartbeat.interval_ms: 50 is out of range 100..1000"),
    ('[logging]\nlevel = "loud"\n',
     "logging.level: 'loud' is not one of error, warn, info, debug, verbose"),
    ('[storage]\nengine = "rocks"\n', "storage.engine: 'rocks' is not one of lmdb, postgres"),
    ('[storage]\npath = ""\n', "storage.path: must not be empty"),
    ("[storage]\nsync = 1979-05-27\n", "storage.sync: expected a boolean, got date 1979-05-27"),
])
def test_bad_file_contents(cwd: Path, system: Path, text: str, expected: str) -> None:
    path = write(cwd / "overhop.toml", text)
    assert error_of(cwd, system) == f"{path}: {expected}"


def test_tls_cert_without_key_is_refused(cwd: Path, system: Path) -> None:
    write(cwd / "overhop.toml", '[server.tls]\ncert_file = "/etc/c.pem"\n')
    assert error_of(cwd, system) == (
        "server.tls.cert_file and server.tls.key_file go together: set both to serve TLS, "
        "or neither")


def test_tls_files_in_file_are_accepted(cwd: Path, system: Path) -> None:
    write(cwd / "overhop.toml",
          '[server.tls]\ncert_file = "/c.pem"\nkey_file = "/k.pem"\nclient_ca_file = "/ca"\n')
    assert load(cwd, system).config.server.tls.client_ca_file == "/ca"


def test_the_old_tls_enabled_key_is_unknown(cwd: Path, system: Path) -> None:
    write(cwd / "overhop.toml", "[server]\ntls_enabled = false\n")
    assert error_of(cwd, system).endswith("unknown config key 'server.tls_enabled'")


def test_unreadable_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read"):
        read_config_file(tmp_path / "absent.toml")


# --- overrides ------------------------------------------------------------------------------


@pytest.mark.parametrize(("words", "expected"), [
    (["--server.port", "7000"], {"server.port": 7000}),
    (["--server.port=7000"], {"server.port": 7000}),
    (["--server.port", "+7_000"], {"server.port": 7000}),
    (["--storage.max_map_size_bytes=1_099_511_627_776"],
     {"storage.max_map_size_bytes": 1099511627776}),
    (["--wire.session.ident_register_timeout_seconds=3"],
     {"wire.session.ident_register_timeout_seconds": 3}),
    (["--server.host", "127.0.0.1"], {"server.host": "127.0.0.1"}),
    (["--storage.path= spaced /dir=x"], {"storage.path": " spaced /dir=x"}),
    (["--storage.self_debug_path="], {"storage.self_debug_path": ""}),
    (["--storage.path=--odd"], {"storage.path": "--odd"}),
    (["--server.port", "1", "--server.port", "2"], {"server.port": 2}),
    (["--logging.level", "debug", "--storage.sync", "no"],
     {"logging.level": "debug", "storage.sync": False}),
    ([], {}),
])
def test_override_parsing(words: list[str], expected: dict[str, object]) -> None:
    assert parse_overrides(words) == expected


@pytest.mark.parametrize(("word", "value"), [
    ("true", True), ("TRUE", True), ("yes", True), ("Yes", True), ("1", True),
    ("false", False), ("False", False), ("no", False), ("NO", False), ("0", False),
])
def test_bool_override_words(word: str, value: bool) -> None:
    assert parse_overrides(["--storage.sync", word]) == {"storage.sync": value}


@pytest.mark.parametrize(("words", "expected"), [
    (["--server.prot", "1"], "unknown config key 'server.prot'"),
    (["--server.prot"], "unknown config key 'server.prot'"),
    (["--server", "1"], "unknown config key 'server'"),
    (["--wire.session", "1"], "unknown config key 'wire.session'"),
    (["--=1"], "unknown config key ''"),
    (["--server.port"], "server.port: missing value"),
    (["--server.port", "--storage.sync", "true"], "server.port: missing value"),
    (["server.port", "1"], "unexpected argument 'server.port': overrides look like"
                           " --section.key VALUE"),
    (["-p", "1"], "unexpected argument '-p': overrides look like --section.key VALUE"),
    (["--server.port", "abc"], "server.port: expected an integer, got 'abc'"),
    (["--server.port", "1.5"], "server.port: expected an integer, got '1.5'"),
    (["--server.port", "0x10"], "server.port: expected an integer, got '0x10'"),
    (["--server.port", " 5"], "server.port: expected an integer, got ' 5'"),
    (["--server.port", "1__0"], "server.port: expected an integer, got '1__0'"),
    (["--server.port", "_10"], "server.port: expected an integer, got '_10'"),
    (["--server.port="], "server.port: expected an integer, got ''"),
    (["--server.port", "\u0661"], "server.port: expected an integer, got '\u0661'"),
    (["--storage.sync", "maybe"],
     "storage.sync: expected a boolean (true/false/yes/no/1/0), got 'maybe'"),
    (["--storage.sync", "2"],
     "storage.sync: expected a boolean (true/false/yes/no/1/0), got '2'"),
    (["--heartbeat.interval_ms", "50"], "heartbeat.interval_ms: 50 is out of range 100..1000"),
    (["--server.port=-1"], "server.port: -1 is out of range 0..65535"),
    (["--logging.level", "loud"],
     "logging.level: 'loud' is not one of error, warn, info, debug, verbose"),
    (["--logging.level", "INFO"],
     "logging.level: 'INFO' is not one of error, warn, info, debug, verbose"),
    (["--server.host="], "server.host: must not be empty"),
])
def test_bad_overrides(cwd: Path, system: Path, words: list[str], expected: str) -> None:
    assert error_of(cwd, system, words) == expected


def test_overrides_win_over_the_file(cwd: Path, system: Path) -> None:
    write(cwd / "overhop.toml", "[server]\nport = 1\nhost = 'h'\n")
    config = load(cwd, system, ["--server.port", "2"]).config
    assert (config.server.port, config.server.host) == (2, "h")


def test_override_cannot_rescue_an_invalid_file(cwd: Path, system: Path) -> None:
    path = write(cwd / "overhop.toml", "[server]\nport = 70000\n")
    message = error_of(cwd, system, ["--server.port", "2"])
    assert message == f"{path}: server.port: 70000 is out of range 0..65535"


def test_client_ca_without_a_certificate_is_refused(cwd: Path, system: Path) -> None:
    message = error_of(cwd, system, ["--server.tls.client_ca_file=/ca.pem"])
    assert message == "server.tls.client_ca_file needs server.tls.cert_file and key_file"


# --- cross-field checks ---------------------------------------------------------------------


@pytest.mark.parametrize(("words", "expected"), [
    (["--server.write_buffer_high_bytes=1048576", "--server.write_buffer_max_bytes=1048576"],
     "server.write_buffer_max_bytes (1048576) must be greater than"
     " server.write_buffer_high_bytes (1048576)"),
    (["--server.write_buffer_high_bytes=134217728"],
     "server.write_buffer_max_bytes (67108864) must be greater than"
     " server.write_buffer_high_bytes (134217728)"),
    (["--storage.initial_map_size_bytes=2097152", "--storage.max_map_size_bytes=1048576"],
     "storage.max_map_size_bytes (1048576) must be at least"
     " storage.initial_map_size_bytes (2097152)"),
    (["--storage.max_map_size_bytes=8388608", "--storage.initial_map_size_bytes=1048576"],
     "storage.reserved_headroom_bytes (8388608) must be less than"
     " storage.max_map_size_bytes (8388608)"),
    (["--pagination.page_size=20", "--pagination.max_page_size=10"],
     "pagination.page_size (20) must not exceed pagination.max_page_size (10)"),
    (["--storage.path=/srv/q", "--storage.self_debug_path=/srv/q"],
     "storage.self_debug_path must differ from storage.path: self-debug wipes its storage"),
])
def test_cross_field_checks(cwd: Path, system: Path, words: list[str], expected: str) -> None:
    assert error_of(cwd, system, words) == expected


def test_cross_field_boundaries_are_accepted(cwd: Path, system: Path) -> None:
    config = load(cwd, system, [
        "--server.write_buffer_high_bytes=1048576", "--server.write_buffer_max_bytes=1048577",
        "--storage.initial_map_size_bytes=8388609", "--storage.max_map_size_bytes=8388609",
        "--pagination.page_size=10", "--pagination.max_page_size=10",
    ]).config
    assert config.server.write_buffer_max_bytes == 1048577
    assert config.storage.max_map_size_bytes == config.storage.initial_map_size_bytes
    assert config.pagination.page_size == config.pagination.max_page_size


def test_cross_field_check_spans_file_and_overrides(cwd: Path, system: Path) -> None:
    write(cwd / "overhop.toml", "[pagination]\nmax_page_size = 10\n")
    assert error_of(cwd, system, ["--pagination.page_size=11"]) == (
        "pagination.page_size (11) must not exceed pagination.max_page_size (10)")


def test_validate_config_checks_every_key_of_a_config_built_in_code() -> None:
    config = dataclasses.replace(Config(), heartbeat=dataclasses.replace(
        Config().heartbeat, interval_ms=10))
    with pytest.raises(ConfigError, match=r"^heartbeat.interval_ms: 10 is out of range"):
        validate_config(config)
    bad_type = dataclasses.replace(Config(), storage=dataclasses.replace(
        Config().storage, sync=1))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^storage.sync: expected a boolean, got 1$"):
        validate_config(bad_type)


# --- storage paths --------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "data", "self_debug"), [
    ("~/.overhop/data", "/home/u/.overhop/data", "/home/u/.overhop/data-self-debug"),
    ("$HOME/d", "/home/u/d", "/home/u/d-self-debug"),
    ("~", "/home/u", "/home/u-self-debug"),
    ("/srv/d/", "/srv/d", "/srv/d-self-debug"),
    ("rel/d", "rel/d", "rel/d-self-debug"),
    ("~other/d", "~other/d", "~other/d-self-debug"),
    ("/x/~/d", "/x/~/d", "/x/~/d-self-debug"),
    ("$HOMEDIR/d", "$HOMEDIR/d", "$HOMEDIR/d-self-debug"),
])
def test_storage_path_resolution(path: str, data: str, self_debug: str) -> None:
    storage = dataclasses.replace(Config().storage, path=path)
    environ = {"HOME": "/home/u"}
    assert storage.resolved_path(environ) == Path(data)
    assert storage.resolved_self_debug_path(environ) == Path(self_debug)


def test_home_with_trailing_slash_and_root_home() -> None:
    storage = Config().storage
    assert storage.resolved_path({"HOME": "/home/u/"}) == Path("/home/u/.overhop/data")
    assert storage.resolved_path({"HOME": "/"}) == Path("/.overhop/data")


def test_explicit_self_debug_path_is_expanded() -> None:
    config = dataclasses.replace(Config(), storage=dataclasses.replace(
        Config().storage, self_debug_path="~/dbg"))
    assert config.self_debug_path({"HOME": "/h"}) == Path("/h/dbg")
    assert config.storage_path({"HOME": "/h"}) == Path("/h/.overhop/data")


def test_home_path_without_home_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^storage.path: '~/.overhop/data' starts with ~"
                                          r" but HOME is not set$"):
        Config().storage.resolved_path({})
    absolute = dataclasses.replace(Config().storage, path="/d")
    assert absolute.resolved_self_debug_path({}) == Path("/d-self-debug")


# --- dumping --------------------------------------------------------------------------------


def test_postgres_needs_a_dsn() -> None:
    config = build_config({"storage.engine": "postgres"})
    with pytest.raises(ConfigError, match=r"storage.postgres.dsn: required"):
        validate_config(config)


def test_dump_has_every_key_in_nested_tables() -> None:
    document = tomllib.loads(dump_config_toml(Config()))
    assert document["wire"]["session"]["ident_register_timeout_seconds"] == 2
    flat = {f"{section}.{key}": value
            for section, table in document.items() for key, value in table.items()
            if not isinstance(value, dict)}
    flat.update({f"wire.session.{key}": value
                 for key, value in document["wire"]["session"].items()})
    flat.update({f"server.tls.{key}": value
                 for key, value in document["server"]["tls"].items()})
    flat.update({f"storage.postgres.{key}": value
                 for key, value in document["storage"]["postgres"].items()})
    assert flat == config_values(Config())


def _valid_value(key: str) -> st.SearchStrategy[object]:
    setting = SETTINGS[key]
    if setting.type is bool:
        return st.booleans()
    if setting.type is int:
        return st.integers(setting.minimum, setting.maximum)
    if setting.choices is not None:
        return st.sampled_from(setting.choices)
    return st.text(min_size=1 if setting.nonempty else 0)


@st.composite
def valid_configs(draw: st.DrawFn) -> Config:
    values = {key: draw(_valid_value(key)) for key in SETTINGS}
    values["http.allow_non_loopback"] = True  # any host then (loopback: test_http_config)
    if bool(values["server.tls.cert_file"]) != bool(values["server.tls.key_file"]) or (
            values["server.tls.client_ca_file"] and not values["server.tls.cert_file"]):
        values["server.tls.cert_file"] = values["server.tls.key_file"] = ""
        values["server.tls.client_ca_file"] = ""
    mark = draw(st.integers(4096, 1024**3))
    values["server.write_buffer_high_bytes"] = mark
    values["server.write_buffer_max_bytes"] = draw(st.integers(max(mark + 1, 65536), 4 * 1024**3))
    low, high = sorted((values["storage.initial_map_size_bytes"],
                        values["storage.max_map_size_bytes"]))
    values["storage.initial_map_size_bytes"], values["storage.max_map_size_bytes"] = low, high
    values["storage.reserved_headroom_bytes"] = min(values["storage.reserved_headroom_bytes"],
                                                    high - 1)  # type: ignore[type-var]
    small, big = sorted((values["pagination.page_size"], values["pagination.max_page_size"]))
    values["pagination.page_size"], values["pagination.max_page_size"] = small, big
    if values["storage.self_debug_path"] == values["storage.path"]:
        values["storage.self_debug_path"] = ""
    if values["storage.engine"] == "postgres" and not str(values["storage.postgres.dsn"]).strip():
        values["storage.postgres.dsn"] = "postgresql://localhost/overhop"
    if values["cluster.node_id"]:
        values["storage.engine"] = "postgres"
        values["storage.postgres.dsn"] = values["storage.postgres.dsn"] or "host=localhost"
        values["cluster.advertise"] = values["cluster.advertise"] or "localhost:9876"
    values["cluster.renew_ms"] = min(values["cluster.renew_ms"],  # type: ignore[type-var]
                                     values["cluster.lease_ms"] // 2)  # type: ignore[operator]
    values["wire.max_buffered_input_bytes"] = max(
        values["wire.max_buffered_input_bytes"],  # type: ignore[type-var]
        2 * values["wire.max_envelope_size_bytes"])  # type: ignore[operator]
    config = build_config(values)
    validate_config(config)
    return config


@settings(max_examples=50)
@given(valid_configs())
def test_dump_round_trips_through_a_file(config: Config) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(dump_config_toml(config), encoding="utf-8")
        loaded = load_config(str(path), [], environ={}, cwd=Path(tmp),
                             system_path=Path(tmp) / "none")
    assert loaded.config == config


# --- the docs -------------------------------------------------------------------------------


def _doc_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\| `([a-z_.]+)` \|(.*)\|", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split(" | ")]
    return rows


def test_docs_list_every_key_with_type_default_and_range() -> None:
    rows = _doc_rows()
    assert list(rows) == list(SETTINGS)
    for key, setting in SETTINGS.items():
        doc_type, doc_default, doc_range, meaning = rows[key]
        default = tomli_w.dumps({"v": setting.default}).removeprefix("v = ").rstrip("\n")
        assert doc_type == setting.type_name, key
        assert doc_default == f"`{default}`", key
        assert doc_range == (setting.limits() or "—"), key
        assert meaning, key


def test_docs_error_examples_are_real_messages(cwd: Path, system: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    for words in (["--server.prot", "1"], ["--server.port", "abc"],
                  ["--heartbeat.interval_ms", "50"], ["--logging.level", "loud"],
                  ["--server.port"], ["--server.tls.client_ca_file", "/ca.pem"]):
        assert f"overhop: {error_of(cwd, system, words)}\n" in text
