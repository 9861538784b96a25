"""Typed keys of what the aiohttp application holds (its state, passed explicitly)."""

from aiohttp import web

from overhop.http.sources import Sources

SOURCES = web.AppKey("sources", Sources)
# The token every dashboard page carries and every action must send back.
CSRF = web.AppKey("csrf", str)
