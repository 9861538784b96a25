"""A worker for `emails`: prints each payload and sometimes fails, to show retries.

    python examples/worker.py --url 127.0.0.1:9876

Stop it with Ctrl-C (or SIGTERM): it gives back jobs it has not started, lets running
ones finish, and says goodbye to the server.
"""

import argparse
import asyncio
import logging
import random

from overhop_client import JobContext, Worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:9876", help="server address")
    parser.add_argument("--fail-rate", type=float, default=0.3,
                        help="share of attempts that raise (0..1)")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    app = Worker(args.url, concurrency=args.concurrency, name="example-worker",
                 create_queues=True)

    @app.handler("emails", timeout=30)
    async def send_email(ctx: JobContext) -> dict[str, str]:
        print(f"attempt {ctx.attempt}/{ctx.max_attempts} of {ctx.jid}: {ctx.payload}",
              flush=True)
        ctx.progress("connecting")
        await asyncio.sleep(0.05)  # stands in for talking to an SMTP server
        if random.random() < args.fail_rate:
            raise ConnectionError("SMTP server did not answer")
        return {"status": "sent", "to": ctx.payload["to"]}

    app.run()


if __name__ == "__main__":
    main()
