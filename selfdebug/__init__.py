"""`overhop --self-debug`: a throwaway server in this process and a raw client that walks
every message type of the protocol against it, printing every frame both ways.

- `selfdebug.frames`: prints decoded frames (direction, type, rid, payload), in colour on a
  terminal;
- `selfdebug.wire`: the raw client (framing from `overhop_client.codec`), nothing hidden;
- `selfdebug.checks`: the small assertions steps make about a reply;
- `selfdebug.plan`: the walk, one `Step` per request or expected push, each checked
  against what `protocol/PROTOCOL.md` says;
- `selfdebug.steps`: the step runner (stops at the first step that fails);
- `selfdebug.run`: the command: config, storage, server, walk, clean-up, exit status.
"""
