"""The security phase of bench_broker.py: what logins and TLS cost.

Three servers on temporary storage: `open` (plain TCP, no users: the default on a fresh
machine), `scram` (plain TCP, users) and `tls` (TLS with a certificate made here by the
`openssl` binary, users). Reported:

- handshake: sequential connections, each TCP (+ TLS) + HELLO (+ two AUTH) + REGISTER +
  close, as a client sees it (ms per connection, median and p99) and what it cost the
  server (CPU ms per connection). The SCRAM user has the minimum 4096 iterations, and one
  has the CLI's default 100,000, to show the client's PBKDF2 (the server runs none);
- e2e: the end-to-end run (a producer and 4 workers, every job acked and completed) on
  `open` and on `tls` (every connection logged in), in ABBA order, jobs/s and server CPU
  µs per job, medians of `repeat` rounds: the difference is TLS's per-job cost.
"""

import asyncio
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench_broker import _admin, _timed_e2e, cpu_seconds, start_server
from bench_client import connect

HANDSHAKES = 200
USER, PASSWORD = "bench", "bench-password-1"
SLOW_USER = "bench-default-iterations"
LOGIN_ENV = ("OVERHOP_BENCH_TLS_CA", "OVERHOP_BENCH_USER", "OVERHOP_BENCH_PASSWORD")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def _set_login(tls_ca: Path | None, user: str | None) -> None:
    for name in LOGIN_ENV:
        os.environ.pop(name, None)
    if tls_ca is not None:
        os.environ["OVERHOP_BENCH_TLS_CA"] = str(tls_ca)
    if user is not None:
        os.environ["OVERHOP_BENCH_USER"] = user
        os.environ["OVERHOP_BENCH_PASSWORD"] = PASSWORD


async def _add_user(port: int, name: str, iterations: int) -> None:
    from overhop.auth.scram import derive_credentials

    conn = await connect(port, name="bench-admin")
    keys = derive_credentials(PASSWORD, os.urandom(16), iterations)
    await conn.request(32, {"name": name, "salt": keys.salt, "iterations": iterations,
                            "stored_key": keys.stored_key, "server_key": keys.server_key,
                            "permissions": ["produce", "consume", "read", "manage", "admin"]})
    conn.transport.close()  # type: ignore[union-attr]


async def _handshakes(port: int, count: int) -> list[float]:
    took = []
    for _ in range(count):
        started = time.perf_counter()
        conn = await connect(port, name="handshake")
        took.append((time.perf_counter() - started) * 1000)
        conn.transport.close()  # type: ignore[union-attr]
        await conn.closed
    return took


def _handshake_cost(pid: int, port: int, count: int) -> dict[str, float]:
    cpu0 = cpu_seconds(pid)
    took = sorted(asyncio.run(_handshakes(port, count)))
    return {"client_ms_p50": round(statistics.median(took), 2),
            "client_ms_p99": round(took[int(len(took) * 0.99) - 1], 2),
            "server_cpu_ms": round((cpu_seconds(pid) - cpu0) / count * 1000, 3)}


def security_report(root: Path, jobs: int, repeat: int) -> dict[str, Any]:
    cert, key = make_certificate(root / "pki")
    tls_args = ("--server.tls.cert_file", str(cert), "--server.tls.key_file", str(key))
    servers = {"open": start_server(root / "open"), "scram": start_server(root / "scram"),
               "tls": start_server(root / "tls", *tls_args)}
    report: dict[str, Any] = {}
    try:
        for name, (_, port) in servers.items():
            _set_login(cert if name == "tls" else None, None)
            asyncio.run(_admin(port, "e2e"))
            if name != "open":
                asyncio.run(_add_user(port, USER, 4096))  # the first: open access ends
                _set_login(cert if name == "tls" else None, USER)
                asyncio.run(_add_user(port, SLOW_USER, 100_000))
        handshake: dict[str, Any] = {}
        for label, server, login in (("open", "open", None), ("scram_4096", "scram", USER),
                                     ("scram_100000", "scram", SLOW_USER),
                                     ("tls_scram_4096", "tls", USER)):
            process, port = servers[server]
            _set_login(cert if server == "tls" else None, login)
            handshake[label] = _handshake_cost(process.pid, port, HANDSHAKES)
        report["handshake"] = handshake
        runs: dict[str, list[tuple[int, float]]] = {"open": [], "tls_scram": []}
        for index in range(max(repeat, 1)):
            order = [("open", None, None), ("tls_scram", cert, USER)]
            if index % 2:
                order.reverse()
            for side, ca, user in order:
                process, port = servers["open" if side == "open" else "tls"]
                _set_login(ca, user)
                runs[side].append(_timed_e2e(process.pid, port, "e2e", jobs))
        _set_login(None, None)
        e2e = {side: {"jobs_per_s": round(statistics.median(r for r, _ in values)),
                      "server_cpu_us_per_job": statistics.median(c for _, c in values),
                      "runs": values} for side, values in runs.items()}
        e2e["tls_server_cpu_us_per_job_extra"] = round(
            e2e["tls_scram"]["server_cpu_us_per_job"] - e2e["open"]["server_cpu_us_per_job"],
            1)
        report["e2e"] = e2e
    finally:
        _set_login(None, None)
        for process, _ in servers.values():
            process.terminate()
            process.wait(60)
    return report
