"""Overhop: a standalone, durable job-queue broker."""

__version__ = "0.1.0"
