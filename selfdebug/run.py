"""`overhop --self-debug`: the whole run, from configuration to exit status.

1. Load the configuration as `overhop serve` would (`--config` discovery: $OVERHOP_CONFIG,
   ./overhop.toml, ~/.overhop/config.toml, /etc/overhop/config.toml), then force
   127.0.0.1, a port the OS picks and the most verbose logging.
2. Use `storage.self_debug_path` (default: the data path + "-self-debug") as a throwaway
   store: a store left there by an earlier run is wiped first; a directory holding
   anything else, or the data directory itself, is refused (exit 2).
3. Start the server in this process and event loop; on a first raw connection add the
   self-debug user (the server has none: the open loopback bootstrap, after which the
   server closes that connection), then walk the protocol on a second one, logged in with
   SCRAM-SHA-256 (`selfdebug.login`, `selfdebug.plan`), printing every frame on stdout;
   the server logs to stderr.
4. Stop the server, remove the store unless `keep_artifacts`, and exit 0 when every step
   passed, else 1 with a line naming the first step that failed.
"""

import asyncio
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import uvloop

from overhop.config.loading import ConfigError, LoadedConfig, load_config
from overhop.logs import configure_logging
from overhop.server.app import serve
from overhop.storage.store import LOCK_FILE
from selfdebug.frames import FramePrinter
from selfdebug.login import Login, bootstrap_walk
from selfdebug.plan import protocol_walk
from selfdebug.steps import Report, Step, run_steps
from selfdebug.wire import RawClient

OVERRIDES = ("--server.host", "127.0.0.1", "--server.port", "0", "--logging.level", "verbose",
             "--http.enabled", "false")
# Files an Overhop store consists of: a directory holding only these is a store.
STORE_FILES = frozenset({"data.mdb", "lock.mdb", LOCK_FILE})
# Opening a fresh LMDB store and binding a port takes milliseconds.
START_TIMEOUT_S = 30.0
PASSED_EXIT = 0
FAILED_EXIT = 1
USAGE_EXIT = 2


class SetupError(Exception):
    """Self-debug cannot start; str() is one line."""


def prepare_storage(path: Path, data_path: Path) -> None:
    """Make `path` an empty place for a throwaway store, or raise SetupError."""
    if path.resolve() == data_path.resolve():
        raise SetupError(f"the self-debug path {path} is the data directory; set "
                         "storage.self_debug_path elsewhere")
    if not path.exists():
        return
    if not path.is_dir():
        raise SetupError(f"the self-debug path {path} is not a directory")
    found = {entry.name for entry in path.iterdir()}
    if not found <= STORE_FILES:
        raise SetupError(f"the self-debug path {path} holds files that are not an Overhop "
                         f"store ({', '.join(sorted(found - STORE_FILES))}); not touching it")
    shutil.rmtree(path)


async def walk_against_new_server(loaded: LoadedConfig, storage: Path,
                                  steps: Sequence[Step], printer: FramePrinter,
                                  bootstrap: Sequence[Step] = ()) -> Report:
    """Start the server on `storage` in this loop, run the `bootstrap` steps on a first
    connection and the steps on a second, stop it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    started: asyncio.Future[tuple[str, int]] = loop.create_future()
    server = asyncio.create_task(serve(loaded, storage, stop, started), name="server")
    waited: set[asyncio.Future[Any]] = {server, started}
    await asyncio.wait(waited, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        stop.set()
        status = await server if server.done() else None
        raise SetupError(f"the server did not start (exit status {status})")
    host, port = started.result()
    printer.note(f"self-debug: server listening on {host}:{port}, storage {storage}")
    try:
        if bootstrap:
            printer.note("self-debug: bootstrap connection (adds the first user)")
            first = await RawClient.open(host, port, printer)
            try:
                report = await run_steps(first, bootstrap, printer)
            finally:
                first.close()
            if not report.ok:
                return report
            printer.note("self-debug: the walk, logged in")
        client = await RawClient.open(host, port, printer)
        try:
            return await run_steps(client, steps, printer)
        finally:
            client.close()
    finally:
        stop.set()
        await server


def run_self_debug(*, keep_artifacts: bool, steps: Sequence[Step] | None = None,
                   out: TextIO | None = None, config_file: str | None = None,
                   overrides: Sequence[str] = ()) -> int:
    """The exit status of a self-debug run (see the module documentation).

    `config_file` and `overrides` are read as `overhop serve` reads them; the server then
    listens on 127.0.0.1 on a port of the system's choice unless they name others."""
    stream = out if out is not None else sys.stdout
    printer = FramePrinter(stream, color=stream.isatty())
    try:
        loaded = load_config(config_file, [*OVERRIDES, *overrides])
        storage = loaded.config.self_debug_path()
        prepare_storage(storage, loaded.config.storage_path())
    except (ConfigError, SetupError) as exc:
        print(f"overhop: {exc}", file=sys.stderr)
        return USAGE_EXIT
    configure_logging("verbose", loaded.config.logging.human_friendly)
    login = Login()
    plan = protocol_walk(login=login) if steps is None else list(steps)
    try:
        report = uvloop.run(walk_against_new_server(loaded, storage, plan, printer,
                                                    bootstrap_walk(login)))
    except (SetupError, OSError) as exc:
        printer.summary(f"self-debug: FAILED before the first step: {exc}", passed=False)
        return FAILED_EXIT
    finally:
        if keep_artifacts:
            printer.note(f"self-debug: storage kept at {storage}")
        else:
            shutil.rmtree(storage, ignore_errors=True)
    if report.ok:
        printer.summary(f"self-debug: all {len(report.passed)} steps passed", passed=True)
        return PASSED_EXIT
    printer.summary(f"self-debug: FAILED at step {report.failed_number} "
                    f"({report.failed_step}): {report.reason}", passed=False)
    return FAILED_EXIT

