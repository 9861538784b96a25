"""Which live broker should own each queue: a pure function every broker computes alike
from the same view, so they agree without talking to each other.

Rendezvous hashing with bounded loads: each queue ranks the brokers by a hash of (queue,
broker) and goes to the first of them with room. Room is the even share: with q queues on
b brokers, q mod b brokers hold one more than the others, so loads differ by one at most.
A queue keeps its broker while the brokers stay the same, and mostly when one joins or
leaves, since its ranking never changes.
"""

import hashlib
from collections.abc import Iterable, Sequence


def _weight(queue_name: str, node_id: str) -> int:
    digest = hashlib.blake2b(f"{queue_name}\x00{node_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def spread(queue_names: Iterable[str], node_ids: Sequence[str]) -> dict[str, str]:
    """Queue name -> the node id that should own it; empty when no broker is live."""
    names = sorted(queue_names)
    if not node_ids or not names:
        return {}
    base, extra = divmod(len(names), len(node_ids))
    fuller = 0  # brokers holding base + 1 already
    load = dict.fromkeys(node_ids, 0)
    chosen: dict[str, str] = {}
    for name in names:
        room = base + (1 if fuller < extra else 0)
        for node in sorted(node_ids, key=lambda n: (_weight(name, n), n), reverse=True):
            if load[node] < room:
                chosen[name] = node
                load[node] += 1
                fuller += load[node] == base + 1
                break
    return chosen
