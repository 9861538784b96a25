"""Garbage-collector settings for the long-running processes (the server and its writer)."""

import gc

# The collector's young-generation threshold (CPython's default is 700). Every request
# allocates a few short-lived objects that reference counting frees; collecting the young
# generation after every 700 of them took about 14% of the event loop's time under load
# (with 50,000: 8-10% less server CPU per job end to end, measured with
# benchmarks/bench_broker.py).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc_for_serving() -> None:
    """Call once loading is done: what is loaded by now (modules, configuration) lives as
    long as the process, so it is kept out of every collection."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
