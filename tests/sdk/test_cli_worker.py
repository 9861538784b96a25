"""`overhop worker` against a real server: --concurrency, --log-level, $OVERHOP_URL, and a
failed job's one WARNING line (its traceback at DEBUG)."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from overhop_client import AsyncClient, JobFailedError

from tests.sdk.harness import DEADLINE_S, wait_until

TASKS = '''
from overhop_client import JobContext, Worker

app = Worker("127.0.0.1:1", concurrency=5)


@app.handler("chores")
async def chore(ctx: JobContext) -> str:
    if ctx.payload == "bad":
        raise ValueError("bad chore")
    return "done"
'''


def test_worker_command_options_and_failure_lines(url: str, tmp_path: Path) -> None:
    (tmp_path / "chores_app.py").write_text(TASKS)
    env = {**os.environ, "OVERHOP_URL": url}  # the worker's own address is replaced
    process = subprocess.Popen(
        [sys.executable, "-m", "overhop", "worker", "chores_app:app", "--concurrency", "2",
         "--log-level", "debug"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        async def main() -> None:
            async with await AsyncClient.connect(url) as client:
                await client.add_queue("chores", max_attempts=1)

                async def credits() -> int:
                    return (await client.stats("chores")).credits

                # --concurrency 2 replaced the worker's 5: it holds two credits.
                await wait_until(credits, lambda n: n == 2, "the worker subscribed")
                assert await client.run("chores", "good", timeout=DEADLINE_S) == "done"
                try:
                    await client.run("chores", "bad", timeout=DEADLINE_S)
                except JobFailedError as failed:
                    return failed.jid
                raise AssertionError("the bad chore did not fail")

        jid = asyncio.run(main())
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 0, stderr
    lines = stderr.splitlines()
    warnings = [line for line in lines if " WARNING " in line and "job_failed" in line]
    assert len(warnings) == 1, stderr
    assert warnings[0].endswith(f"job_failed jid={jid} attempt=1/1: ValueError: bad chore")
    debug = [line for line in lines if " DEBUG " in line and "job_failed" in line]
    assert len(debug) == 1 and "traceback:" in debug[0], stderr
    assert 'raise ValueError("bad chore")' in stderr  # the traceback's lines follow
