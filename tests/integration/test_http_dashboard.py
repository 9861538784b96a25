"""The dashboard's pages, JSON API, live streams and actions on a real server: status
codes, JSON shapes, CSRF and read-only refusals, and the broker's state after each action."""

import asyncio
import http.client
import json
import re
import time
from typing import Any

import pytest
from overhop_client import AsyncClient, Client

from tests.support.failed_jobs import TRACEBACK
from tests.support.failed_jobs import failed_jobs as failed_jobs_on
from tests.support.http_client import HttpReply, request
from tests.support.server_process import ServerProcess

PAGES = ["/", "/queues/mails", "/jobs/mails:0", "/workers", "/schedules"]


def token(server: ServerProcess) -> str:
    page = request(server.http_url + "/").text
    found = re.search(r'<meta name="overhop-csrf" content="([^"]+)">', page)
    assert found is not None
    return found.group(1)


def post(server: ServerProcess, path: str, body: Any = None, csrf: str | None = None,
         headers: dict[str, str] | None = None) -> HttpReply:
    all_headers = {"X-Overhop-CSRF": csrf if csrf is not None else token(server)}
    all_headers.update(headers or {})
    return request(server.http_url + path, "POST", {} if body is None else body, all_headers)


def producer(server: ServerProcess) -> Client:
    return Client(f"127.0.0.1:{server.port}")


def failed_jobs(server: ServerProcess, queue: str, count: int) -> list[str]:
    return failed_jobs_on(server.port, queue, count)


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_html_with_token_and_policy(server: ServerProcess, path: str) -> None:
    reply = request(server.http_url + path)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in reply.headers["content-security-policy"]
    assert reply.headers["x-frame-options"] == "DENY"
    assert 'name="overhop-csrf"' in reply.text
    assert 'content="false"' in reply.text  # not read-only


def test_static_assets_and_icon(server: ServerProcess) -> None:
    for name in ("style.css", "common.js", "overview.js", "queue.js", "job.js", "workers.js",
                 "schedules.js"):
        assert request(f"{server.http_url}/static/{name}").status == 200, name
    assert request(server.http_url + "/static/nope.js").status == 404
    assert request(server.http_url + "/favicon.ico").status == 204


def test_overview_json(server: ServerProcess) -> None:
    with producer(server) as client:
        client.add_queue("mails", concurrency_limit=3)
        client.enqueue("mails", {"to": "a"})
        client.pause("mails")
    data = request(server.http_url + "/api/overview").json()
    assert data["server"]["connections"] >= 0
    assert data["server"]["storage"]["max_bytes"] > data["server"]["storage"]["used_bytes"] > 0
    assert data["server"]["read_only"] is False
    (queue,) = data["queues"]  # `_system` is not shown
    assert queue["name"] == "mails" and queue["paused"] is True
    assert queue["counts"]["waiting"] == 1
    assert queue["concurrency"] == {"active": 0, "limit": 3}
    assert queue["oldest_waiting_age_seconds"] >= 0
    assert queue["badges"] == ["paused with jobs waiting"]
    assert "rates" in data


def test_queue_jobs_are_paged_by_after_with_filters(server: ServerProcess) -> None:
    with producer(server) as client:
        client.add_queue("mails")
        jids = [client.enqueue("mails", {"n": n}) for n in range(5)]
    base = server.http_url + "/api/queues/mails/jobs"
    seen = []
    after = ""
    while True:
        page = request(f"{base}?status=waiting&limit=2&after={after}").json()
        assert page["status"] == "waiting" and page["limit"] == 2
        seen += [job["jid"] for job in page["jobs"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == jids
    assert request(f"{base}?status=failed").json()["jobs"] == []
    assert request(f"{base}?status=bogus").status == 400
    assert request(f"{base}?after=other:123").status == 400
    assert request(f"{base}?limit=x").status == 400
    assert request(server.http_url + "/api/queues/nope/jobs").status == 404
    assert request(server.http_url + "/api/queues/_system/jobs").status == 404


def test_job_lists_and_detail_show_the_task(server: ServerProcess) -> None:
    with producer(server) as client:
        client.add_queue("mails")
        named = client.enqueue("mails", {"n": 1}, task="mail.send")
        plain = client.enqueue("mails", {"n": 2})
    page = request(f"{server.http_url}/api/queues/mails/jobs?status=waiting").json()
    assert [(job["jid"], job["task"]) for job in page["jobs"]] == [
        (named, "mail.send"), (plain, None)]
    assert request(f"{server.http_url}/api/jobs/{named}").json()["task"] == "mail.send"
    assert request(f"{server.http_url}/api/jobs/{plain}").json()["task"] is None


def test_job_json_payload_download_and_failure_history(server: ServerProcess) -> None:
    (jid,) = failed_jobs(server, "mails", 1)
    job = request(f"{server.http_url}/api/jobs/{jid}").json()
    assert job["status"] == "failed" and job["queue"] == "mails"
    assert json.loads(job["payload"]) == {"to": "user0@example.com"}
    (attempt,) = job["history"]
    assert attempt["outcome"] == "failed"
    assert attempt["error"] == {"message": "SMTP said 550: mailbox unavailable",
                                "details": TRACEBACK}
    assert job["blocked_by"] is None and job["blocked_sentence"] is None
    download = request(f"{server.http_url}/api/jobs/{jid}/payload")
    assert download.status == 200
    assert "attachment" in download.headers["content-disposition"]
    assert json.loads(download.body) == {"to": "user0@example.com"}
    assert request(f"{server.http_url}/api/jobs/mails:nope").status == 404
    assert request(f"{server.http_url}/api/jobs/_system:x").status == 404
    assert request(f"{server.http_url}/api/jobs/mails:nope/payload").status == 404


def test_a_large_payload_is_cut_and_downloadable_whole(server: ServerProcess) -> None:
    with producer(server) as client:
        client.add_queue("big")
        jid = client.enqueue("big", {"text": "x" * 200_000})
    job = request(f"{server.http_url}/api/jobs/{jid}").json()
    assert job["payload_cut"] is True
    assert len(job["payload"]) == 64 * 1024 < job["payload_length"]
    whole = request(f"{server.http_url}/api/jobs/{jid}/payload")
    assert json.loads(whole.body) == {"text": "x" * 200_000}


def test_blocked_by_is_said_in_a_sentence(server: ServerProcess) -> None:
    with producer(server) as client:
        client.add_queue("idle")
        jid = client.enqueue("idle", None)
    job = request(f"{server.http_url}/api/jobs/{jid}").json()
    assert job["blocked_by"]["reason"] == "no_worker_credit"
    assert job["blocked_sentence"] == "No worker is subscribed to 'idle'."


def test_workers_json(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with await AsyncClient.connect(f"127.0.0.1:{server.port}", name="w-1",
                                             labels={"zone": "eu"}) as client:
            await client.add_queue("mails")
            await client.subscribe("mails", credits=2)
            (worker,) = request(server.http_url + "/api/workers").json()["workers"]
            assert worker["name"] == "w-1" and worker["labels"] == {"zone": "eu"}
            assert worker["subscriptions"][0]["queue"] == "mails"
            assert worker["subscriptions"][0]["credits"] == 2
            assert worker["jobs"] == [] and worker["pid"] > 0 and worker["host"]

    asyncio.run(scenario())


def test_schedules_json(server: ServerProcess) -> None:
    assert request(server.http_url + "/api/schedules").json() == {"schedules": []}
    with producer(server) as client:
        client.add_queue("mails")
        client.add_schedule("digest", "mails", "0 8 * * MON", timezone="Europe/Berlin",
                            missed="once")
        client.add_schedule("tick", "mails", "* * * * * *")
        deadline = time.monotonic() + 15
        while client.stats("mails").counts.waiting < 1:
            assert time.monotonic() < deadline, "the schedule did not fire"
            time.sleep(0.05)
        client.pause_schedule("tick")
        fired = client.stats("mails").counts.waiting
    rows = request(server.http_url + "/api/schedules").json()["schedules"]
    assert [row["name"] for row in rows] == ["digest", "tick"]
    digest, tick = rows
    assert (digest["queue"], digest["cron"], digest["tz"], digest["missed"]) == (
        "mails", "0 8 * * MON", "Europe/Berlin", "once")
    assert digest["paused"] is False and digest["next_run_at"].endswith("Z")
    assert digest["last_run_at"] is None and digest["fired_since_start"] == 0
    assert tick["paused"] is True and tick["next_run_at"] is None
    assert tick["last_run_at"].endswith("Z") and tick["fired_since_start"] == fired


def first_event(server: ServerProcess, path: str) -> dict[str, Any]:
    """The first `data:` of a server-sent event stream."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        assert reply.status == 200
        assert reply.getheader("content-type") == "text/event-stream"
        while True:
            line = reply.readline().decode()
            if line.startswith("data: "):
                return json.loads(line[len("data: "):])
    finally:
        connection.close()


def test_live_streams(server: ServerProcess) -> None:
    with producer(server) as client:
        client.add_queue("mails")
        jid = client.enqueue("mails", {"n": 1})
    overview = first_event(server, "/api/events")
    assert overview["queues"][0]["counts"]["waiting"] == 1
    assert first_event(server, f"/api/jobs/{jid}/events")["jid"] == jid
    assert request(f"{server.http_url}/api/jobs/_system:x/events").status == 404


def test_queue_actions_change_the_broker(server: ServerProcess) -> None:
    with producer(server) as client:
        client.add_queue("mails")
        for n in range(3):
            client.enqueue("mails", {"n": n})
        reply = post(server, "/api/queues/mails/pause")
        assert reply.status == 200 and reply.json()["state"] == "paused"
        assert client.queue("mails").state == "paused"
        assert post(server, "/api/queues/mails/pause").status == 409  # already paused
        assert post(server, "/api/queues/mails/resume").json()["state"] == "active"
        changed = post(server, "/api/queues/mails/settings",
                       {"changes": {"concurrency_limit": 7, "rate_limit": None}})
        assert changed.status == 200 and changed.json()["config"]["concurrency_limit"] == 7
        assert client.queue("mails").config.concurrency_limit == 7
        assert post(server, "/api/queues/mails/settings",
                    {"changes": {"concurrency_limit": -1}}).status == 400
        assert post(server, "/api/queues/mails/settings", {"changes": {}}).status == 400
        cleared = post(server, "/api/queues/mails/clear")
        assert cleared.status == 200 and cleared.json()["removed"] == 3
        assert client.stats("mails").counts.waiting == 0
    assert post(server, "/api/queues/nope/pause").status == 404
    assert post(server, "/api/queues/_system/pause").status == 400
    logged = server.events("dashboard_action")
    assert {e["action"] for e in logged} >= {"pause", "resume", "change_settings", "clear"}


def test_job_actions_retry_all_retry_and_remove(server: ServerProcess) -> None:
    jids = failed_jobs(server, "mails", 3)
    reply = post(server, "/api/queues/mails/retry-failed")
    assert reply.status == 200 and reply.json()["retried"] == 3
    with producer(server) as client:
        assert {client.job(jid).status for jid in jids} == {"waiting"}
        client.pause("mails")
        assert post(server, f"/api/jobs/{jids[0]}/retry").status == 409  # not failed
        removed = post(server, f"/api/jobs/{jids[1]}/remove")
        assert removed.status == 200  # waiting jobs are removable (only active ones are not)
        assert client.job(jids[1]) is None
    assert post(server, "/api/jobs/mails:nope/remove").status == 404


def test_retry_and_remove_one_job(server: ServerProcess) -> None:
    jid, other = failed_jobs(server, "mails", 2)
    assert post(server, f"/api/jobs/{jid}/retry").json()["status"] == "waiting"
    assert post(server, f"/api/jobs/{other}/remove").status == 200
    assert request(f"{server.http_url}/api/jobs/{other}").status == 404


def test_actions_refuse_without_token_cross_origin_or_form(server: ServerProcess) -> None:
    with producer(server) as client:
        client.add_queue("mails")
    assert post(server, "/api/queues/mails/pause", csrf="").status == 403
    assert post(server, "/api/queues/mails/pause", csrf="wrong").status == 403
    assert post(server, "/api/queues/mails/pause",
                headers={"Origin": "http://evil.example"}).status == 403
    assert post(server, "/api/queues/mails/pause",
                headers={"Sec-Fetch-Site": "cross-site"}).status == 403
    assert post(server, "/api/queues/mails/pause",
                headers={"Content-Type": "application/x-www-form-urlencoded"}).status == 403
    assert request(server.http_url + "/api/queues/mails/pause").status == 405  # GET
    with producer(server) as client:
        assert client.queue("mails").state == "active"
    assert server.events("dashboard_action_refused")


def test_read_only_mode_refuses_every_action(start_server) -> None:
    server = start_server("--http.read_only", "true")
    page = request(server.http_url + "/").text
    assert 'name="overhop-read-only" content="true"' in page
    with producer(server) as client:
        client.add_queue("mails")
        reply = post(server, "/api/queues/mails/pause")
        assert reply.status == 403 and "read-only" in reply.json()["message"]
        assert client.queue("mails").state == "active"
