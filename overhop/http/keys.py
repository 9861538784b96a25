"""Typed keys of what the aiohttp application holds (its state, passed explicitly)."""

from aiohttp import web
from prometheus_client import CollectorRegistry

from overhop.http.sources import Sources

SOURCES = web.AppKey("sources", Sources)
REGISTRY = web.AppKey("registry", CollectorRegistry)
