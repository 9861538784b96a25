"""The HTTP side of the broker: Prometheus metrics, health, and the web dashboard.

It runs on the broker's own event loop (aiohttp) and only reads: in-memory state through
the broker's service, and short LMDB read transactions through the store. Its actions
(pause, clear, retry...) are the broker's own verbs, as the wire handlers call them.
"""
