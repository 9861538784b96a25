"""Start and stop a real `overhop serve` process on temporary storage, on 127.0.0.1.

The port is chosen by the OS (`--server.port 0`) and read back from the JSON startup log
line, so tests never race for ports; the same for the HTTP listener (`--http.port 0`, read
from the `http_started` line into `http_port`, 0 when it is off). `kill()` is SIGKILL, for
crash tests.
"""

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

# A cold interpreter imports uvloop, lmdb and structlog in well under a second; 30 s covers
# a loaded CI machine without letting a broken start hang the suite.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


class ServerProcess:
    def __init__(self, storage_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.storage_path = storage_path
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.http_port = 0
        self.log_lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self) -> "ServerProcess":
        args = [
            sys.executable, "-m", "overhop", "serve",
            "--server.host", "127.0.0.1", "--server.port", "0",
            "--storage.path", str(self.storage_path), "--logging.level", "info",
            "--http.port", "0", *self.extra_args,
        ]
        env = {**os.environ, "HOME": str(self.storage_path.parent)}
        env.pop("OVERHOP_CONFIG", None)
        self.process = subprocess.Popen(
            args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
            cwd=str(self.storage_path.parent),
        )
        started = threading.Event()

        def read_log() -> None:
            assert self.process is not None and self.process.stderr is not None
            for line in self.process.stderr:
                self.log_lines.append(line)
                if not self.http_port and '"http_started"' in line:
                    self.http_port = json.loads(line)["port"]
                if not started.is_set() and '"server_started"' in line:
                    self.port = json.loads(line)["port"]
                    started.set()
            started.set()

        self._reader = threading.Thread(target=read_log, daemon=True)
        self._reader.start()
        if not started.wait(START_TIMEOUT_S) or not self.port:
            self.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.log_lines))
        return self

    @property
    def http_url(self) -> str:
        """`http://127.0.0.1:<http port>` of the running server."""
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it to exit; its exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(STOP_TIMEOUT_S)
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT_S)
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)

    def events(self, name: str) -> list[dict[str, object]]:
        """Every JSON log line whose event is `name`."""
        found = []
        for line in list(self.log_lines):
            if f'"{name}"' in line:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("event") == name:
                    found.append(record)
        return found
