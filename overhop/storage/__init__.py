"""Storage: the LMDB key layout, record codecs, the store and its single writer thread."""
