"""Jobs that have failed for real: enqueued, delivered to a worker, acknowledged, failed."""

import asyncio
from typing import Any

from overhop_client import AsyncClient

TRACEBACK = ('Traceback (most recent call last):\n  File "mailer.py", line 12, in send\n'
             "ValueError: SMTP said 550: mailbox unavailable\n")
QUEST_TIMEOUT_S = 10.0


def failed_jobs(port: int, queue: str, count: int) -> list[str]:
    """`count` jobs of a new `queue` (one attempt each), failed with TRACEBACK."""

    async def scenario() -> list[str]:
        url = f"127.0.0.1:{port}"
        async with await AsyncClient.connect(url, name="producer") as client:
            await client.add_queue(queue, max_attempts=1)
            quests: asyncio.Queue[Any] = asyncio.Queue()
            worker = await AsyncClient.connect(url, name="mailer-1", on_quest=quests.put_nowait)
            jids = [await client.enqueue(queue, {"to": f"user{n}@example.com"})
                    for n in range(count)]
            await worker.subscribe(queue, credits=count)
            for _ in range(count):
                quest = await asyncio.wait_for(quests.get(), QUEST_TIMEOUT_S)
                await worker.ack(quest)
                await worker.log(quest, "connecting to smtp.example.com")
                await worker.fail(quest, "SMTP said 550: mailbox unavailable", TRACEBACK)
            await worker.close()
            return jids

    return asyncio.run(scenario())
