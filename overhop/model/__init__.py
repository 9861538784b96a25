"""The domain records and enums: jobs, queues, statuses, transitions, policies.

The bottom of the house: it imports nothing of ours but `overhop.errors`, so storage,
the broker and the server can all use it without importing each other.
"""
