"""The messages between the server and its writer process, and their encoding.

Both ways, a message is one MessagePack value written to the socket pair; MessagePack
delimits itself, so a reader feeds what arrives to a streaming `Unpacker` and takes whole
messages out. Nothing is pickled: an operation is `[code, field, ...]` (see
`operations/catalogue.py`), records travel as their stored bytes.

- server to writer: an array of operations, in submission order (those submitted in one
  turn of the server's event loop), or nil: finish what was sent, then stop.
- writer to server, each ending with the writer's stats
  `[commits, operations, space_low, failed, map_size]`:
  - `[READY, stats]` once the store is open;
  - `[COMMIT, results, refusals, durable, stats]` after each commit: one result per
    operation of the commit, in order (nil for a refused one), the refusals as
    `[index in the commit, error code, message, details]`, and how many operations ever
    sent are durable now;
  - `[DURABLE, durable, failure, stats]` after the syncer's sync (failure: nil or
    `[code, message, details]`);
  - `[STOPPED, stats]`, the last one.
"""

from typing import Any

import msgpack

READY = 0
COMMIT = 1
DURABLE = 2
STOPPED = 3

Refusal = tuple[str, str, Any]  # (error code, message, details)
# commits, operations, space_low, failed, map_size, commit and sync seconds since the last
Stats = tuple[int, int, bool, bool, int, list[float], list[float]]


def packer() -> msgpack.Packer:
    """A packer for one thread (a Packer keeps a buffer: never share one across threads)."""
    return msgpack.Packer(use_bin_type=True)


def unpacker() -> msgpack.Unpacker:
    # The peer is our own other process: no size limit beyond MessagePack's own (a message
    # holds one loop turn's operations, or one commit's results). Results may be maps with
    # integer keys (removal counts by status).
    return msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
