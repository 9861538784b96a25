"""Tasks: several kinds of job on one queue, enqueued by their decorated functions.

    python examples/tasks.py worker --url 127.0.0.1:9876    # runs the tasks' handlers
    python examples/tasks.py produce --url 127.0.0.1:9876   # enqueues, waits for results

The producer passes the decorated functions (imported from the worker's module, here the
same file) to `run` and `enqueue`: each job goes to its function's queue, named with its
task, and the worker runs that task's handler. A job whose task no worker has fails with
"no handler for task ..." once its attempts are used up.
"""

import argparse
import asyncio
import logging
from typing import Any

from overhop_client import AsyncClient, JobContext, JobFailedError, Worker

URL = ["127.0.0.1:9876"]
# The address is asked before each connection, so `--url` can set it after the decorators.
app = Worker(lambda: URL[0], name="example-tasks", create_queues=True)


@app.task("accounts.welcome", queue="accounts", timeout=10)
async def welcome(ctx: JobContext) -> dict[str, Any]:
    print(f"{ctx.task} {ctx.jid}: {ctx.payload}", flush=True)
    return {"greeted": ctx.payload["name"]}


@app.task("accounts.close", queue="accounts")
def close_account(ctx: JobContext) -> dict[str, Any]:  # a plain function runs in a thread
    print(f"{ctx.task} {ctx.jid}: {ctx.payload}", flush=True)
    return {"closed": ctx.payload["id"]}


async def produce(url: str, wait: float) -> None:
    async with await AsyncClient.connect(url) as client:
        print("welcome:", await client.run(welcome, {"name": "Ada"}, timeout=wait))
        print("close:", await client.run(close_account, {"id": 7}, timeout=wait))
        jid = await client.enqueue("accounts", {"id": 8}, task="accounts.unknown",
                                   max_attempts=1)
        try:
            await client.result(jid, timeout=wait)
        except JobFailedError as exc:
            print("unknown task:", exc.error.get("message") if exc.error else exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("worker", "produce"))
    parser.add_argument("--url", default=URL[0], help="server address")
    parser.add_argument("--wait", type=float, default=30.0,
                        help="seconds to wait for each result (produce)")
    args = parser.parse_args()
    URL[0] = args.url
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.mode == "worker":
        app.run()
    else:
        asyncio.run(produce(args.url, args.wait))


if __name__ == "__main__":
    main()
