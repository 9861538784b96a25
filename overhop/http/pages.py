"""The dashboard's pages: one small HTML shell each, filled by our own script.

No build step and no third-party code: each page is this shell, `static/style.css`,
`static/common.js` and the page's own script, which reads the JSON API and the live
stream. The shell carries the CSRF token and whether the dashboard is read-only.
"""

import html

from aiohttp import web

from overhop.http.keys import CSRF, SOURCES

# Only our own scripts, styles and requests; no frames (clickjacking), no referrer leaks.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
TITLES = {"overview": "Overview", "queue": "Queue", "job": "Job", "workers": "Workers",
          "schedules": "Schedules"}


def render_page(request: web.Request, page: str, argument: str = "") -> web.Response:
    read_only = request.app[SOURCES].config.http.read_only
    title = TITLES[page] + (f" {argument}" if argument else "")
    body = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="overhop-csrf" content="{html.escape(request.app[CSRF])}">
<meta name="overhop-read-only" content="{'true' if read_only else 'false'}">
<title>Overhop · {html.escape(title)}</title>
<link rel="stylesheet" href="/static/style.css">
</head>
<body data-page="{page}" data-argument="{html.escape(argument)}">
<header>
  <a class="brand" href="/">Overhop</a>
  <nav><a href="/">Overview</a><a href="/workers">Workers</a>
    <a href="/schedules">Schedules</a></nav>
  <span id="live" class="live" title="live updates">○ connecting</span>
  {'<span class="badge">read-only</span>' if read_only else ''}
</header>
<div id="flash" role="status"></div>
<main id="main"><p class="muted">Loading…</p></main>
<script src="/static/common.js"></script>
<script src="/static/{page}.js"></script>
</body>
</html>
"""
    return web.Response(text=body, content_type="text/html", headers=SECURITY_HEADERS)


async def overview_page(request: web.Request) -> web.Response:
    return render_page(request, "overview")


async def queue_page(request: web.Request) -> web.Response:
    return render_page(request, "queue", request.match_info["name"])


async def job_page(request: web.Request) -> web.Response:
    return render_page(request, "job", request.match_info["jid"])


async def workers_page(request: web.Request) -> web.Response:
    return render_page(request, "workers")


async def schedules_page(request: web.Request) -> web.Response:
    return render_page(request, "schedules")
