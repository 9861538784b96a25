"""Groups in the store: each group's counts and its place in its queue's turns.

Only jobs with a `group` touch this; a queue that never had one pays one read per
dispatch (its absent turn record). Four pieces, all changed in the job's own transaction:

- `groups`, key queue prefix + group: the group's `waiting` and `active` counts, its
  `state` (idle: nothing waiting; in turn; parked: at its queue's group limit with jobs
  waiting), its `turn` while in turn, and `taken` (its dispatches, for the fair share).
  Under the queue prefix alone: the queue's turn record (`next_turn`, the ungrouped jobs'
  turn and `taken`, and `blocked`, the waiting jobs of parked groups).
- `group_ring`, key queue prefix + `r` + turn (8 bytes): the groups in turn, the one
  served longest ago first; queue prefix + `p` + group: the parked groups.
- `group_waiting`, key queue prefix + group + 0x00 + rank + uuid7: each group's waiting
  jobs, highest priority first, then oldest.

A group's record is deleted once nothing of it waits or runs, so the tables hold only live
groups: their size is bounded by the jobs stored.
"""

import struct
from dataclasses import dataclass

import lmdb

from overhop.storage import lmdb_reads as reads

_GROUP = struct.Struct(">QQQQB")
_TURNS = struct.Struct(">QQQQ")
_U64 = struct.Struct(">Q")
IDLE, IN_TURN, PARKED = 0, 1, 2
RING = b"r"
PARKED_MARK = b"p"


@dataclass(slots=True)
class GroupCounts:
    waiting: int = 0
    active: int = 0
    turn: int = 0
    taken: int = 0
    state: int = IDLE


def decode_group_counts(data: bytes) -> GroupCounts:
    return GroupCounts(*_GROUP.unpack(data))


@dataclass(slots=True)
class QueueTurns:
    """A queue's turn record: the next turn to hand out, the ungrouped jobs' turn and
    dispatches, and the waiting jobs held back by parked groups."""

    next_turn: int = 0
    ungrouped_turn: int = 0
    ungrouped_taken: int = 0
    blocked: int = 0


# The writer's memory of group records (key -> counts as committed, None: no record). It
# is valid only while every write to `groups` goes through a GroupBook given it, and only
# after a commit: the writer empties it when a transaction is aborted. Emptied whole when
# it would pass this many groups, which bounds its memory (about 15 MB).
KnownGroups = dict[bytes, "GroupCounts | None"]
KNOWN_GROUPS_MAX = 100_000


def group_waiting_prefix(queue_prefix: bytes, group: str) -> bytes:
    return queue_prefix + group.encode() + b"\x00"


class GroupBook:
    """The group tables of one transaction: the writer's, or a read (`Store.group_active`,
    which only reads counts).

    Counts and turn records are read once and written once per transaction (`flush`, just
    before the commit, like the status counters): a dispatch of 64 jobs of one group
    reads and writes its record once, not 128 times. The turn and parked entries of
    `group_ring` are written at once, since dispatch reads them with a cursor."""

    __slots__ = ("_counts", "_groups", "_known", "_ring", "_ring_cursor", "_turns", "_txn")

    def __init__(self, txn: lmdb.Transaction, groups: "lmdb._Database",
                 ring: "lmdb._Database", known: "KnownGroups | None" = None) -> None:
        self._txn = txn
        self._groups = groups
        self._ring = ring
        self._ring_cursor: lmdb.Cursor | None = None
        self._counts: dict[bytes, GroupCounts] = {}
        self._turns: dict[bytes, QueueTurns | None] = {}
        # The writer's memory of group records as last committed (None: no record), kept
        # from one transaction to the next so that a group's moves in later transactions
        # do not read its record again; see `KnownGroups`.
        self._known = known

    def turns(self, queue_prefix: bytes) -> QueueTurns | None:
        if queue_prefix not in self._turns:
            data = reads.get(self._txn, queue_prefix, self._groups)
            self._turns[queue_prefix] = None if data is None else QueueTurns(
                *_TURNS.unpack(data))
        return self._turns[queue_prefix]

    def _turns_or_new(self, queue_prefix: bytes) -> QueueTurns:
        """The queue's turn record, made when its first grouped job comes."""
        turns = self.turns(queue_prefix)
        if turns is None:
            turns = self._turns[queue_prefix] = QueueTurns()
        return turns

    def counts(self, queue_prefix: bytes, group: str) -> GroupCounts:
        key = queue_prefix + group.encode()
        return self._counts.get(key) or self._load(key)

    def _load(self, key: bytes) -> GroupCounts:
        """A group's record, first touched in this transaction."""
        known = self._known
        if known is not None and key in known:
            counts = known[key] or GroupCounts()
        else:
            data = reads.get(self._txn, key, self._groups)
            counts = GroupCounts() if data is None else GroupCounts(*_GROUP.unpack(data))
        self._counts[key] = counts
        return counts

    def flush(self) -> None:
        """Write the counts and turn records changed in this transaction."""
        txn, db, known = self._txn, self._groups, self._known
        if known is not None and len(known) + len(self._counts) > KNOWN_GROUPS_MAX:
            known.clear()
        for key, counts in self._counts.items():
            if counts.waiting == 0 and counts.active == 0:
                txn.delete(key, db=db)
                if known is not None:
                    known[key] = None
            else:
                txn.put(key, _GROUP.pack(counts.waiting, counts.active, counts.turn,
                                         counts.taken, counts.state), db=db)
                if known is not None:
                    known[key] = counts
        for key, turns in self._turns.items():
            if turns is None:
                txn.delete(key, db=db)
            else:
                txn.put(key, _TURNS.pack(turns.next_turn, turns.ungrouped_turn,
                                         turns.ungrouped_taken, turns.blocked), db=db)
        self._counts.clear()
        self._turns.clear()

    def change(self, queue_prefix: bytes, group: str, waiting: int, active: int,
               limit: int | None) -> None:
        """A job of the group entered or left `waiting` or `active` (the deltas)."""
        key = queue_prefix + group.encode()
        counts = self._counts.get(key) or self._load(key)
        counts.waiting += waiting
        counts.active += active
        if counts.waiting < 0 or counts.active < 0:
            raise RuntimeError(f"group {group!r} counts would go negative")
        state = _place_of(counts, limit)
        if state != counts.state:
            self._move(queue_prefix, key[len(queue_prefix):], counts, state, waiting)
        elif state == PARKED:
            self._turns_or_new(queue_prefix).blocked += waiting

    def served(self, queue_prefix: bytes, group: str, counts: GroupCounts) -> None:
        """The group's job was just dispatched (its `counts` read in this transaction):
        to the back of the turns, if still in."""
        counts.taken += 1
        if counts.state == IN_TURN:
            turns = self._turns_or_new(queue_prefix)
            self._txn.delete(queue_prefix + RING + _U64.pack(counts.turn), db=self._ring)
            counts.turn = _next_turn(turns)
            self._txn.put(queue_prefix + RING + _U64.pack(counts.turn), group.encode(),
                          db=self._ring)

    def ungrouped_served(self, queue_prefix: bytes) -> None:
        """An ungrouped job was just dispatched: the ungrouped jobs go to the back."""
        turns = self._turns_or_new(queue_prefix)
        turns.ungrouped_taken += 1
        turns.ungrouped_turn = _next_turn(turns)

    def first_in_turn(self, queue_prefix: bytes) -> tuple[int, str] | None:
        """The turn and name of the group served longest ago among those in turn."""
        cursor = self._ring_cursor
        if cursor is None:
            cursor = self._ring_cursor = self._txn.cursor(db=self._ring)
        start = queue_prefix + RING
        if not cursor.set_range(start):
            return None
        key = reads.key_at(cursor)
        if not key.startswith(start):
            return None
        return _U64.unpack_from(key, len(start))[0], reads.value_at(cursor).decode()

    def replace_all(self, queue_prefix: bytes, limit: int | None) -> None:
        """The queue's group limit changed: every live group takes its place again (one
        read per live group: a settings change, not a hot path)."""
        turns = self.turns(queue_prefix)
        if turns is None:
            return
        self.flush()  # the scan below reads the table
        turns = self.turns(queue_prefix)
        assert turns is not None
        cursor = self._txn.cursor(db=self._groups)
        found: list[tuple[str, GroupCounts]] = []
        if cursor.set_range(queue_prefix + b"\x01"):
            for key, value in reads.items_from(cursor):
                if not key.startswith(queue_prefix):
                    break
                found.append((key[len(queue_prefix):].decode(),
                              GroupCounts(*_GROUP.unpack(value))))
        for group, counts in found:
            self._counts[queue_prefix + group.encode()] = counts
            state = _place_of(counts, limit)
            if state != counts.state:
                self._move(queue_prefix, group.encode(), counts, state, 0)

    def forget_queue(self, queue_prefix: bytes) -> None:
        """The queue is gone (it had no jobs left, so no live groups): its turn record."""
        self._turns[queue_prefix] = None

    def _move(self, queue_prefix: bytes, name: bytes, counts: GroupCounts, state: int,
              waiting_delta: int) -> None:
        """Move the group to `state` (in turn, parked or idle), its counts changed already
        by `waiting_delta` waiting jobs; keep `blocked`."""
        turns = self._turns_or_new(queue_prefix)
        if counts.state == IN_TURN:
            self._txn.delete(queue_prefix + RING + _U64.pack(counts.turn), db=self._ring)
        elif counts.state == PARKED:
            self._txn.delete(queue_prefix + PARKED_MARK + name, db=self._ring)
            turns.blocked -= counts.waiting - waiting_delta
        if state == IN_TURN:
            counts.turn = _next_turn(turns)
            self._txn.put(queue_prefix + RING + _U64.pack(counts.turn), name, db=self._ring)
        elif state == PARKED:
            self._txn.put(queue_prefix + PARKED_MARK + name, b"", db=self._ring)
            turns.blocked += counts.waiting
        counts.state = state


def _place_of(counts: GroupCounts, limit: int | None) -> int:
    """Where a group's counts put it: idle (nothing waiting), in turn, or parked (at its
    queue's group limit with jobs waiting)."""
    if counts.waiting == 0:
        return IDLE
    return IN_TURN if limit is None or counts.active < limit else PARKED


def _next_turn(turns: QueueTurns) -> int:
    turn = turns.next_turn
    turns.next_turn += 1
    return turn
