"""A worker whose handler fans out: one `newsletters` job becomes one `emails` job per
recipient (run `examples/worker.py` to process those).

    python examples/fanout_worker.py --url 127.0.0.1:9876

Enqueue a newsletter with, for example:

    python -c "from overhop_client import Client; \\
        print(Client().enqueue('newsletters', {'subject': 'News', \\
        'recipients': ['a@example.com', 'b@example.com']}))"
"""

import argparse
import contextlib
import logging

from overhop_client import Client, JobContext, QueueExistsError, Worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:9876", help="server address")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    with Client(args.url) as client:  # the queue the follow-up jobs go to
        if client.queue("emails") is None:
            # Another process may create it between the two calls: that is fine too.
            with contextlib.suppress(QueueExistsError):
                client.add_queue("emails")

    app = Worker(args.url, concurrency=2, name="example-fanout", create_queues=True)

    @app.handler("newsletters")
    async def fan_out(ctx: JobContext) -> list[str]:
        subject = ctx.payload["subject"]
        jids = []
        for address in ctx.payload["recipients"]:
            jid = await ctx.enqueue("emails", {"to": address, "subject": subject})
            ctx.log(f"queued {jid} for {address}")
            jids.append(jid)
        print(f"{ctx.jid}: {len(jids)} emails queued", flush=True)
        return jids  # stored as the newsletter job's result

    app.run()


if __name__ == "__main__":
    main()
