"""Enqueue a few jobs to `emails` and wait for each one's outcome, without polling.

    python examples/producer.py --url 127.0.0.1:9876

Uses the blocking `Client`, as a web app would. Run `examples/worker.py` alongside so the
jobs get done.
"""

import argparse
import time
from datetime import timedelta

from overhop_client import Client, JobFailedError, QueueExistsError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:9876", help="server address")
    parser.add_argument("--count", type=int, default=5, help="jobs to enqueue")
    parser.add_argument("--wait", type=float, default=60.0,
                        help="seconds to wait for the jobs to finish")
    args = parser.parse_args()

    with Client(args.url, name="example-producer") as client:
        if client.queue("emails") is None:
            try:
                client.add_queue("emails", max_attempts=3,
                                 retry_interval=timedelta(milliseconds=500))
                print("created queue emails")
            except QueueExistsError:
                pass  # another process created it between the two calls
        jids = [client.enqueue("emails", {"to": f"user{n}@example.com", "subject": "Hello"})
                for n in range(args.count)]
        for jid in jids:
            print("enqueued", jid)

        # The server pushes each job's outcome when it ends (WATCH and RESULT).
        give_up = time.monotonic() + args.wait
        for jid in jids:
            try:
                result = client.result(jid, timeout=max(0.0, give_up - time.monotonic()))
                print(f"{jid}: completed, result={result!r}")
            except JobFailedError as failed:
                print(f"{jid}: failed after {failed.attempts_so_far} attempt(s): {failed.error}")
            except TimeoutError:
                print(f"{jid}: not finished within {args.wait:g} s")


if __name__ == "__main__":
    main()
