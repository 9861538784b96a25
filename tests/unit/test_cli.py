"""The `overhop` command line: --version, `config` output, and config errors of both commands."""

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from overhop import __version__
from overhop.cli import cli
from overhop.config import Config, load_config
from overhop.config.loading import SYSTEM_CONFIG_PATH
from overhop.config.schema import build_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    """An environment with an empty HOME and no OVERHOP_CONFIG."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "OVERHOP_CONFIG": None}


def invoke(runner: CliRunner, args: list[str], env: dict[str, str | None], cwd: Path) -> Result:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return runner.invoke(cli, args, env=env, prog_name="overhop")
    finally:
        os.chdir(old)


def config_from_output(stdout: str) -> Config:
    """The Config a `overhop config` output describes, read back with tomllib."""
    document = tomllib.loads(stdout)

    def flatten(table: dict[str, object], prefix: str) -> dict[str, object]:
        values: dict[str, object] = {}
        for key, value in table.items():
            if isinstance(value, dict):
                values.update(flatten(value, f"{prefix}{key}."))
            else:
                values[prefix + key] = value
        return values

    return build_config(flatten(document, ""))


def assert_config_error(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == f"overhop: {message}\n"
    assert "Traceback" not in result.output


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"], prog_name="overhop")
    assert result.exit_code == 0
    assert result.stdout == f"overhop {__version__}\n"


def test_group_lists_its_commands(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--help"], prog_name="overhop")
    assert result.exit_code == 0
    assert "serve" in result.stdout
    assert "config" in result.stdout


def test_group_can_be_extended() -> None:
    assert isinstance(cli, click.Group)
    assert {"serve", "config"} <= set(cli.commands)


@pytest.mark.skipif(SYSTEM_CONFIG_PATH.exists(), reason="this host has a system config file")
def test_config_with_defaults(runner: CliRunner, env: dict[str, str | None],
                              tmp_path: Path) -> None:
    result = invoke(runner, ["config"], env, tmp_path)
    assert result.exit_code == 0, result.output
    first, _, rest = result.stdout.partition("\n")
    assert first == "# source: defaults"
    assert config_from_output(rest) == Config()
    assert result.stderr == ""


def test_config_output_round_trips(runner: CliRunner, env: dict[str, str | None],
                                   tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[logging]\nlevel = "debug"\n[wire.session]\n'
                    "unhelloed_max_lifetime_seconds = 30\n", encoding="utf-8")
    overrides = ["--server.port", "7000", "--wire.session.ident_register_timeout_seconds=3",
                 "--storage.sync", "no"]
    # --config may come among the overrides.
    args = ["config", *overrides[:2], "--config", str(path), *overrides[2:]]
    result = invoke(runner, args, env, tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"# source: {path}\n")
    printed = config_from_output(result.stdout)
    assert printed == load_config(str(path), overrides, environ={}).config
    assert printed.logging.level == "debug"
    assert printed.server.port == 7000
    assert printed.wire.session == dataclasses.replace(
        Config().wire.session, unhelloed_max_lifetime_seconds=30,
        ident_register_timeout_seconds=3)
    assert printed.storage.sync is False

    # The printed text is itself a valid config file describing the same Config.
    again = tmp_path / "again.toml"
    again.write_text(result.stdout, encoding="utf-8")
    assert invoke(runner, ["config", "--config", str(again)], env, tmp_path).stdout == (
        result.stdout.replace(f"# source: {path}", f"# source: {again}"))


def test_config_finds_the_file_in_the_current_directory(
        runner: CliRunner, env: dict[str, str | None], tmp_path: Path) -> None:
    (tmp_path / "overhop.toml").write_text("[server]\nport = 1234\n", encoding="utf-8")
    result = invoke(runner, ["config"], env, tmp_path)
    assert result.stdout.startswith(f"# source: {tmp_path / 'overhop.toml'}\n")
    assert config_from_output(result.stdout).server.port == 1234


def test_config_uses_overhop_config_variable(
        runner: CliRunner, env: dict[str, str | None], tmp_path: Path) -> None:
    path = tmp_path / "env.toml"
    path.write_text("[jobs]\ndefault_max_attempts = 7\n", encoding="utf-8")
    result = invoke(runner, ["config"], {**env, "OVERHOP_CONFIG": str(path)}, tmp_path)
    assert result.stdout.startswith(f"# source: {path}\n")
    assert config_from_output(result.stdout).jobs.default_max_attempts == 7


@pytest.mark.parametrize("command", ["serve", "config"])
@pytest.mark.parametrize(("args", "message"), [
    (["--server.prot", "1"], "unknown config key 'server.prot'"),
    (["--server.port", "abc"], "server.port: expected an integer, got 'abc'"),
    (["--heartbeat.interval_ms=50"], "heartbeat.interval_ms: 50 is out of range 100..1000"),
    (["--server.port"], "server.port: missing value"),
    (["--logging.level", "loud"],
     "logging.level: 'loud' is not one of error, warn, info, debug, verbose"),
    (["--server.tls.cert_file", "/c.pem"],
     "server.tls.cert_file and server.tls.key_file go together: set both to serve TLS, "
     "or neither"),
    (["stray"], "unexpected argument 'stray': overrides look like --section.key VALUE"),
])
def test_config_errors_exit_2_with_one_line(
        runner: CliRunner, env: dict[str, str | None], tmp_path: Path,
        command: str, args: list[str], message: str) -> None:
    result = invoke(runner, [command, "--config", "/dev/null", *args], env, tmp_path)
    assert_config_error(result, message)


@pytest.mark.parametrize("command", ["serve", "config"])
def test_missing_config_file(runner: CliRunner, env: dict[str, str | None], tmp_path: Path,
                             command: str) -> None:
    result = invoke(runner, [command, "--config", "missing.toml"], env, tmp_path)
    assert_config_error(result, f"config file {str(tmp_path / 'missing.toml')!r} does not exist")


@pytest.mark.parametrize("command", ["serve", "config"])
def test_invalid_toml(runner: CliRunner, env: dict[str, str | None], tmp_path: Path,
                      command: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = = 1\n", encoding="utf-8")
    result = invoke(runner, [command, "--config", str(path)], env, tmp_path)
    assert_config_error(result, f"{path}: invalid TOML: Invalid value (at line 2, column 8)")


def test_cross_field_error(runner: CliRunner, env: dict[str, str | None],
                           tmp_path: Path) -> None:
    result = invoke(runner, ["serve", "--config", "/dev/null",
                             "--server.write_buffer_high_bytes=67108864"], env, tmp_path)
    assert_config_error(result, "server.write_buffer_max_bytes (67108864) must be greater than"
                                " server.write_buffer_high_bytes (67108864)")


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=False)


def test_importing_the_cli_does_not_import_the_server() -> None:
    result = _run_python("import sys, overhop.cli; "
                         "print(any(m.startswith('overhop.server') for m in sys.modules))")
    assert result.stdout == "False\n", result.stderr


def test_python_dash_m_overhop(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "overhop", "config", "--config", "/dev/null", "--server.port=x"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, check=False)
    assert result.returncode == 2
    assert result.stderr == "overhop: server.port: expected an integer, got 'x'\n"
    version = subprocess.run([sys.executable, "-m", "overhop", "--version"], cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                             text=True, check=False)
    assert version.stdout == f"overhop {__version__}\n"
