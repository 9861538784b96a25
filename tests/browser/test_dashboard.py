"""The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
Playwright against a real server.

Open the overview, enqueue through the SDK and see the count change without a reload;
pause a queue with its button and see the server's state change; open a failed job and
read its traceback and history; see a running job's log lines appear live. Screenshots of
each page go to a temporary directory (printed), and to docs/images/ when
OVERHOP_DOCS_SCREENSHOTS=1. Playwright never downloads a browser here: it launches
/usr/bin/chromium, and the tests skip, saying so, when that is absent.
"""

import asyncio
import os
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from overhop_client import AsyncClient, Client

from tests.support.failed_jobs import failed_jobs
from tests.support.server_process import ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
# Generous for a loaded CI machine; the page updates twice a second when all is well.
UPDATE_TIMEOUT_MS = 15_000
VIEWPORT = {"width": 1400, "height": 900}
CALL_TIMEOUT_S = 20.0
T = TypeVar("T")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium is absent (apt-get install chromium)")

if CHROMIUM.exists():
    from playwright.sync_api import Page, expect, sync_playwright


@pytest.fixture(scope="module")
def shots() -> Path:
    path = Path(tempfile.mkdtemp(prefix="overhop-dashboard-shots-"))
    print(f"dashboard screenshots: {path}")
    return path


@pytest.fixture
def page() -> Iterator["Page"]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            yield context.new_page()
        finally:
            browser.close()


def screenshot(page: "Page", shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    if os.environ.get("OVERHOP_DOCS_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMAGES / f"dashboard-{name}.png"), full_page=True)


def test_overview_updates_live_and_pause_button_pauses(server: ServerProcess, page: "Page",
                                                        shots: Path) -> None:
    expect.set_options(timeout=UPDATE_TIMEOUT_MS)
    with Client(f"127.0.0.1:{server.port}") as client:
        client.add_queue("emails", concurrency_limit=4)
        client.add_queue("reports", rate_limit=5)
        client.enqueue("emails", {"to": "a@example.com"})
        for n in range(4):
            client.enqueue("reports", {"report": n})
        page.goto(server.http_url + "/")
        waiting = page.locator('tr[data-queue="emails"] td[data-status="waiting"]')
        expect(waiting).to_have_text("1")
        expect(page.locator("#live")).to_have_text("● live")
        page.evaluate("window.notReloaded = true")
        for n in range(2):
            client.enqueue("emails", {"to": f"b{n}@example.com"})
        expect(waiting).to_have_text("3")
        assert page.evaluate("window.notReloaded") is True  # updated in place, no reload
        screenshot(page, shots, "overview")

        page.on("dialog", lambda dialog: dialog.accept())
        page.locator('tr[data-queue="emails"] button[data-action="pause"]').click()
        expect(page.locator('tr[data-queue="emails"] [data-field="state"]')).to_have_text("paused")
        assert client.queue("emails").state == "paused"
        expect(page.locator('tr[data-queue="emails"] button[data-action="resume"]')).to_be_visible()


def test_failed_job_shows_traceback_and_history(server: ServerProcess, page: "Page",
                                                shots: Path) -> None:
    expect.set_options(timeout=UPDATE_TIMEOUT_MS)
    with ThreadPoolExecutor(1) as pool:  # its own event loop, away from Playwright's
        jids = pool.submit(failed_jobs, server.port, "emails", 3).result()
    page.goto(f"{server.http_url}/queues/emails?status=failed")
    rows = page.locator("#jobs tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#status-tabs a.current")).to_have_text("failed (3)")
    screenshot(page, shots, "queue")

    page.locator(f'tr[data-jid="{jids[0]}"] a').click()
    page.wait_for_url(f"**/jobs/{jids[0]}")
    expect(page.locator("#status")).to_have_text("failed")
    history = page.locator("#history tbody tr")
    expect(history).to_have_count(1)
    expect(history.first).to_contain_text("failed")
    expect(page.locator("pre.traceback")).to_contain_text(
        "ValueError: SMTP said 550: mailbox unavailable")
    expect(page.locator(".error-message")).to_have_text("SMTP said 550: mailbox unavailable")
    expect(page.locator("#payload")).to_contain_text('"to": "user0@example.com"')
    expect(page.locator("#logs")).to_contain_text("connecting to smtp.example.com")
    screenshot(page, shots, "job")

    page.on("dialog", lambda dialog: dialog.accept())
    page.locator('button[data-action="retry"]').click()
    expect(page.locator("#status")).not_to_have_text("failed")
    with Client(f"127.0.0.1:{server.port}") as client:
        assert client.job(jids[0]).status in ("waiting", "active")


def test_the_task_shows_in_the_job_list_and_on_the_job(server: ServerProcess,
                                                       page: "Page") -> None:
    expect.set_options(timeout=UPDATE_TIMEOUT_MS)
    with Client(f"127.0.0.1:{server.port}") as client:
        client.add_queue("emails")
        named = client.enqueue("emails", {"to": "a@example.com"}, task="mail.send")
        plain = client.enqueue("emails", {"to": "b@example.com"})
    page.goto(f"{server.http_url}/queues/emails?status=waiting")
    expect(page.locator(f'tr[data-jid="{named}"]')).to_contain_text("mail.send")
    expect(page.locator(f'tr[data-jid="{plain}"]')).not_to_contain_text("mail.send")
    page.locator(f'tr[data-jid="{named}"] a').click()
    page.wait_for_url(f"**/jobs/{named}")
    expect(page.locator("#task")).to_have_text("mail.send")
    page.goto(f"{server.http_url}/jobs/{plain}")
    expect(page.locator("#status")).to_have_text("waiting")
    expect(page.locator("#task")).to_have_count(0)


class LoopThread:
    """An event loop in a thread of its own, for SDK calls beside Playwright's sync API
    (which runs its own loop in the test's thread)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(CALL_TIMEOUT_S)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(CALL_TIMEOUT_S)
        self.loop.close()


def test_running_job_logs_appear_live_and_workers_page(server: ServerProcess, page: "Page",
                                                       shots: Path) -> None:
    expect.set_options(timeout=UPDATE_TIMEOUT_MS)
    background = LoopThread()
    quests: asyncio.Queue[Any] = asyncio.Queue()
    worker = background.run(AsyncClient.connect(
        f"127.0.0.1:{server.port}", name="mailer-1", labels={"zone": "eu"},
        on_quest=quests.put_nowait))
    try:
        background.run(worker.add_queue("emails"))
        jid = background.run(worker.enqueue("emails", {"to": "c@example.com"}))
        background.run(worker.subscribe("emails", credits=2))
        quest = background.run(asyncio.wait_for(quests.get(), CALL_TIMEOUT_S))
        background.run(worker.ack(quest))
        background.run(worker.heartbeat(quest, {"done": 1, "of": 3}))
        page.goto(f"{server.http_url}/jobs/{jid}")
        expect(page.locator("#status")).to_have_text("active")
        expect(page.locator("#progress")).to_have_text('{"done":1,"of":3}')
        page.evaluate("window.notReloaded = true")
        background.run(worker.log(quest, "step 1 of 3: rendered"))
        background.run(worker.log(quest, "step 2 of 3: sent"))
        expect(page.locator("#logs")).to_contain_text("step 2 of 3: sent")
        assert page.evaluate("window.notReloaded") is True
        screenshot(page, shots, "job-live")

        page.goto(f"{server.http_url}/workers")
        row = page.locator("#workers tbody tr")
        expect(row).to_contain_text("mailer-1")
        expect(row).to_contain_text("zone=eu")
        expect(row).to_contain_text(jid)
        screenshot(page, shots, "workers")
        background.run(worker.complete(quest, {"sent": True}))
    finally:
        background.run(worker.close())
        background.close()


def test_schedules_page_lists_next_and_last_runs(server: ServerProcess, page: "Page",
                                                 shots: Path) -> None:
    expect.set_options(timeout=UPDATE_TIMEOUT_MS)
    with Client(f"127.0.0.1:{server.port}") as client:
        client.add_queue("reports")
        client.add_schedule("nightly", "reports", "30 2 * * *", timezone="Europe/Berlin")
        client.add_schedule("tick", "reports", "* * * * * *")
        page.goto(f"{server.http_url}/schedules")
        nightly = page.locator('tr[data-schedule="nightly"]')
        expect(nightly).to_contain_text("30 2 * * *")
        expect(nightly).to_contain_text("Europe/Berlin")
        expect(nightly.locator('[data-field="last_run_at"]')).to_have_text("—")
        tick = page.locator('tr[data-schedule="tick"]')
        # Live: the fires of the every-second schedule show without a reload.
        page.evaluate("window.notReloaded = true")
        expect(tick.locator('[data-field="fired"]')).not_to_have_text("0")
        expect(tick.locator('[data-field="last_run_at"]')).not_to_have_text("—")
        assert page.evaluate("window.notReloaded") is True
        client.pause_schedule("tick")
        expect(tick.locator('[data-field="state"]')).to_have_text("paused")
        expect(tick.locator('[data-field="next_run_at"]')).to_have_text("—")
        screenshot(page, shots, "schedules")
