"""Several brokers on one PostgreSQL database, each queue owned by one (docs/cluster.md)."""
