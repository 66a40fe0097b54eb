"""Real-browser tests (Playwright driving Debian's chromium, as tests/dashboard/test_browser.py) of
the bulk jobs and the add-a-task form (issue 19, parts 4 and 5): retry every dead letter and see
the tasks run again, add a task with an invalid then a valid payload, bulk-cancel a filtered set;
at 1400 and 390 px (the phone layout is another change's: here nothing of these must break)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.tasks import ECHO, SLEEP
from tests.conftest import ROOT
from tests.dashboard import test_browser_tasks
from tests.dashboard.conftest import KEYS
from tests.dashboard.test_api import kill
from tests.dashboard.test_browser import log_in
from tests.dashboard.test_browser_tasks import SHOTS, submit
from tests.worker.test_end_to_end import start_agent, wait_running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
IMG = ROOT / "docs" / "img"
#: A dashboard process; its base URL (the fixture of tests/dashboard/test_browser_tasks.py).
browser_env = test_browser_tasks.browser_env


def within(page: Any, selector: str, width: int) -> None:
    """Every element ``selector`` matches is shown and fits the viewport's width."""
    for box in page.locator(selector).all():
        assert box.is_visible(), selector
        rect = box.bounding_box()
        assert rect and rect["x"] >= 0 and rect["x"] + rect["width"] <= width + 1, (selector, rect)


def statuses(page: Any) -> list[str]:
    return list(page.locator("#task-table tbody td[data-field=status]").all_inner_texts())


def until(page: Any, check: Any, timeout: float = 30.0, reload_every: float = 5.0) -> None:
    """Until ``check()`` holds (the page is live; a reload now and then guards a missed frame)."""
    deadline = last = time.monotonic()
    deadline += timeout
    while time.monotonic() < deadline:
        if check():
            return
        if time.monotonic() - last > reload_every:
            page.reload()
            last = time.monotonic()
        time.sleep(0.2)
    raise AssertionError("the page never showed it")


@pytest.mark.parametrize("width", [1400, 390])
def test_retry_every_dead_letter_and_see_the_tasks_run_again(
    browser_env, procs, env_factory, tmp_path, rclient, redis_url, token, width
):
    from playwright.sync_api import sync_playwright

    ids = submit(redis_url, SLEEP, [{"seconds": 0} for _ in range(4)])
    for task_id in ids:
        kill(rclient, task_id)  # out of retries: in the dead-letter set, the record dead
    start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    with sync_playwright() as pw:
        browser, page, errors = log_in(
            pw, browser_env, token("operator", sub="olga"), {"width": width, "height": 900}
        )
        page.wait_for_url(f"{browser_env}/")
        page.goto(f"{browser_env}/tasks?type=sleep")
        assert statuses(page) == ["dead"] * 4
        page.goto(f"{browser_env}/queues")
        page.wait_for_selector('tr[data-queue="default.p2"] .dead:text-is("4")')
        within(page, "#retry-all-dead", width)
        page.click("#retry-all-dead")
        page.wait_for_selector("#confirm[open]")
        page.click("#confirm-ok")
        page.wait_for_selector("#notices .notice:has-text('retried 4 across 1 queue')")
        page.screenshot(path=str(SHOTS / f"retry-all-dead-{width}.png"), full_page=True)
        page.goto(f"{browser_env}/tasks?type=sleep")
        until(page, lambda: statuses(page) == ["succeeded"] * 4)
        page.screenshot(path=str(SHOTS / f"retried-tasks-ran-{width}.png"), full_page=True)
        if width == 1400:
            page.screenshot(path=str(IMG / "dashboard-dead-letters-retried.png"))
        browser.close()
    assert all(rclient.hget(KEYS.task(t), "status") == b"succeeded" for t in ids)
    assert not [e for e in errors if "Content Security Policy" in e], errors


@pytest.mark.parametrize("width", [1400, 390])
def test_add_a_task_with_an_invalid_then_a_valid_payload(
    browser_env, procs, env_factory, tmp_path, rclient, token, width
):
    from playwright.sync_api import sync_playwright

    start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    with sync_playwright() as pw:
        browser, page, errors = log_in(
            pw, browser_env, token("operator", sub="olga"), {"width": width, "height": 900}
        )
        page.wait_for_url(f"{browser_env}/")
        page.goto(f"{browser_env}/tasks")
        page.click("a:has-text('Add a task')")
        page.wait_for_url(f"{browser_env}/tasks/new")
        page.select_option("#add-type", "sleep")
        assert '"seconds"' in page.locator("#add-payload").input_value()  # a start from the schema
        page.click("#add-schema-box summary")
        assert '"maximum": 300' in page.locator("#add-schema").inner_text()
        page.fill("#add-payload", '{"seconds": "soon", "extra": 1}')
        page.select_option("#add-priority", "P1")
        page.click("#add-submit")
        page.wait_for_selector("#add-payload-errors li")
        text = page.locator("#add-payload-errors").inner_text()
        assert "payload is invalid for task type 'sleep'" in text, text
        assert "body.payload.seconds: " in text and "body.payload.extra: " in text, text
        assert page.locator("#add-payload").get_attribute("aria-invalid") == "true"
        assert rclient.zcard(KEYS.tasks_all) == 0
        within(page, "#add-submit, #add-type, #add-payload-errors", width)
        page.screenshot(path=str(SHOTS / f"add-task-errors-{width}.png"), full_page=True)
        if width == 1400:
            page.screenshot(path=str(IMG / "dashboard-add-task.png"))
        page.fill("#add-payload", '{"seconds": 0.1}')
        page.fill("#add-key", f"form-{width}")
        page.click("#add-submit")
        page.wait_for_url(lambda url: "/tasks/" in url and not url.endswith("/new"), timeout=10_000)
        task_id = page.url.rsplit("/", 1)[1]
        until(page, lambda: page.locator("h1 .state").first.inner_text() == "succeeded")
        page.screenshot(path=str(SHOTS / f"added-task-ran-{width}.png"), full_page=True)
        browser.close()
    record = rclient.hgetall(KEYS.task(task_id))
    assert (
        record[b"submitted_by"] == b"olga"
        and record[b"priority"] == b"P1"
        and record[b"status"] == b"succeeded"
    )
    assert not [e for e in errors if "Content Security Policy" in e], errors


@pytest.mark.parametrize("width", [1400, 390])
def test_bulk_cancel_a_filtered_set(browser_env, rclient, redis_url, token, width):
    from playwright.sync_api import sync_playwright

    sleeps = submit(redis_url, SLEEP, [{"seconds": 1} for _ in range(5)])
    echoes = submit(redis_url, ECHO, [{"i": i} for i in range(3)])
    with sync_playwright() as pw:
        browser, page, errors = log_in(
            pw, browser_env, token("operator", sub="olga"), {"width": width, "height": 900}
        )
        page.wait_for_url(f"{browser_env}/")
        page.goto(f"{browser_env}/tasks?type=sleep")
        assert statuses(page) == ["queued"] * 5
        page.check("#bulk-all")
        page.wait_for_selector("#bulk-all-count:has-text('5 tasks')")
        assert page.locator("#bulk-selected").inner_text() == "all 5 matching"
        within(page, "#task-bulk button", width)
        page.screenshot(path=str(SHOTS / f"bulk-cancel-{width}.png"), full_page=True)
        if width == 1400:
            page.screenshot(path=str(IMG / "dashboard-bulk-actions.png"))
        page.click("#task-bulk [data-bulk=cancel]")
        page.wait_for_selector("#confirm[open]")
        assert "every task matching these filters (5 tasks)" in page.locator("#confirm-text").inner_text()
        page.click("#confirm-ok")
        page.wait_for_selector("#notices .notice:has-text('canceled 5')")
        until(page, lambda: statuses(page) == ["canceled"] * 5)
        # two selected rows of another filter: one queued (canceled), one finished meanwhile (skipped)
        page.goto(f"{browser_env}/tasks?type=echo")
        rclient.hset(KEYS.task(echoes[0]), "status", "succeeded")
        page.check(f"#task-table tbody input[value='{echoes[0]}']")
        page.check(f"#task-table tbody input[value='{echoes[1]}']")
        assert page.locator("#bulk-selected").inner_text() == "2 selected"
        page.click("#task-bulk [data-bulk=cancel]")
        page.click("#confirm-ok")
        page.wait_for_selector("#notices .notice:has-text('canceled 1, skipped 1 (finished)')")
        browser.close()
    assert {rclient.hget(KEYS.task(t), "status") for t in sleeps} == {b"canceled"}
    assert rclient.hget(KEYS.task(echoes[2]), "status") == b"queued"  # not selected
    assert not [e for e in errors if "Content Security Policy" in e], errors


@pytest.mark.parametrize("width", [1400, 390])
def test_select_dead_letters_and_delayed_messages_on_a_queue_page(
    browser_env, rclient, redis_url, token, width
):
    """A queue's page: delete two selected dead letters, run a delayed message now (no worker runs:
    the messages are seen to move)."""
    from playwright.sync_api import sync_playwright

    from tests.dashboard.test_bulk import delay

    dead = submit(redis_url, SLEEP, [{"seconds": 0} for _ in range(3)])
    later = submit(redis_url, ECHO, [{"i": i} for i in range(2)])
    for task_id in dead:
        kill(rclient, task_id)
    mids = [delay(rclient, t) for t in later]
    with sync_playwright() as pw:
        browser, page, errors = log_in(
            pw, browser_env, token("operator", sub="olga"), {"width": width, "height": 900}
        )
        page.wait_for_url(f"{browser_env}/")
        page.goto(f"{browser_env}/queues/default.p2")
        page.wait_for_selector("#dead-table tbody td.sel input")
        assert page.locator("#dead-table tbody td.sel input").count() == 3
        page.check(f"#dead-table tr[data-letter='{dead[0]}'] td.sel input")
        page.check(f"#dead-table tr[data-letter='{dead[1]}'] td.sel input")
        page.click(".bulk-bar button:has-text('Delete selected')")
        assert "2 selected dead letters" in page.locator("#confirm-text").inner_text()
        page.click("#confirm-ok")
        page.wait_for_selector("#notices .notice:has-text('deleted 2')")
        page.wait_for_function("() => document.querySelectorAll('#dead-table tr[data-letter]').length === 1")
        page.check(f"#delayed-table tr[data-delayed='{mids[0]}'] td.sel input")
        within(page, ".bulk-bar button", width)
        page.screenshot(path=str(SHOTS / f"queue-bulk-{width}.png"), full_page=True)
        page.click(".bulk-bar button:has-text('Run selected now')")
        page.click("#confirm-ok")
        page.wait_for_selector("#notices .notice:has-text('promoted 1')")
        page.wait_for_function(
            "() => document.querySelectorAll('#delayed-table tr[data-delayed]').length === 1"
        )
        browser.close()
    assert rclient.zcard(KEYS.dead_letters("default.p2")) == 1
    assert rclient.lrange(KEYS.delay_queue("default.p2"), 0, -1) == [mids[1].encode()]
    assert rclient.llen(KEYS.queue("default.p2")) == 1  # the copy, ready for a worker
    assert not [e for e in errors if "Content Security Policy" in e], errors
