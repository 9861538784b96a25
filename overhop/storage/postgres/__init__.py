"""The PostgreSQL storage engine: the LMDB key layout kept in one table, written by the
writer process in one transaction per group commit, read by the server asynchronously."""
