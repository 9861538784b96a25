"""The value limits every envelope is held to (`codec.py` applies them, `typed.py` states
them as types)."""

# Deep enough for any realistic job payload, shallow enough that walking it is cheap and a
# hostile frame cannot exhaust the C unpacker's stack (msgpack gives up near 1,024).
MAX_NESTING_DEPTH = 64
# Request ids are correlation tokens, not data: 128 characters hold any UUID or counter scheme.
MAX_RID_LENGTH = 128
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
