"""The only asyncio code: boot, connections, the handler table, heartbeat, status, shutdown."""
