"""The wire layer: framing, envelopes, message catalogue and payload parsing. Pure, no I/O."""
