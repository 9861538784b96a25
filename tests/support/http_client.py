"""Plain HTTP requests to a test server's HTTP listener (stdlib only): status, headers, body."""

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

TIMEOUT_S = 10.0


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def request(url: str, method: str = "GET", body: Any = None,
            headers: dict[str, str] | None = None) -> HttpReply:
    data = None if body is None else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json"} if data is not None else {}
    all_headers.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as reply:
            return HttpReply(reply.status, {k.lower(): v for k, v in reply.headers.items()},
                             reply.read())
    except urllib.error.HTTPError as exc:
        return HttpReply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())
