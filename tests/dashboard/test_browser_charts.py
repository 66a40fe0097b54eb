"""The overview's charts in a real browser (Playwright driving Debian's chromium) against a real
dashboard process, worker agent and Redis (issue 19, part 6). The worker runs 6 ``fail`` tasks of
3 attempts each beside ones that succeed; older minutes are rollups written into Redis with gaps
between them. The axis is UTC (labelled UTC+00:00, dates on 24 h), hovering a point or stepping
with the keyboard shows its values, the 5 %/10 % lines are labelled, the error rate is over tasks
(attempts a second series), the latency chart draws p50/p95 and the type filter changes the
series. Screenshot: docs/img/dashboard-charts.png."""

from __future__ import annotations

import re
import time

import pytest

from dashboard.latency_histogram import bucket_of
from shared.devtools.embedded_redis import free_port
from shared.tasks import ECHO, FAIL, SLEEP
from tests.dashboard.conftest import KEYS
from tests.dashboard.test_browser import SHOTS, ensure_chromium, log_in, submit
from tests.dashboard.test_browser_bandit import answers
from tests.dashboard.test_browser_tasks import IMG
from tests.helpers import wait_for
from tests.worker.test_end_to_end import start_agent, wait_running
from tests.worker.test_rollup_outcomes import FAST_RETRIES, rollup_totals

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
#: Minutes ago of the seeded rollups (older than the live 15 minutes; the rest of the hour is gaps).
SEEDED = (52, 51, 50, 47, 46, 45, 44, 38, 37, 30, 29, 28, 27, 26, 21, 20)
#: The text of the hover column of the last chart point with tasks (the errors chart).
LAST_WITH_DATA = """sel => {
  const cols = [...document.querySelectorAll(sel + ' rect.hit')];
  const hit = cols.filter((c) => c.querySelector('title').textContent.includes('% of tasks')).pop();
  return hit ? [hit.dataset.i, hit.querySelector('title').textContent] : null;
}"""

#: Pairs of time-axis labels of the latency chart whose boxes overlap.
OVERLAPPING_TICKS = """() => {
  const boxes = [...document.querySelectorAll('#chart-latency .x-label')].map((t) => t.getBBox());
  return boxes.slice(1).map((b, i) => [boxes[i].x + boxes[i].width, b.x]).filter(([end, x]) => end > x);
}"""


def seed_history(rclient) -> None:
    """Rollups as finish.lua writes them, in some older minutes (echo and sleep tasks, a few fail)."""
    now = int(time.time() // 60)
    for n, ago in enumerate(SEEDED):
        echo, fails = 20 + (n * 7) % 15, n % 4 == 0
        fields = {"processed": echo + 3 * fails, "failed": 3 * fails, "retried": 2 * fails,
                  "tasks": echo + fails, "tasks_failed": int(fails), "duration_count": echo + 3 * fails,
                  "duration_ms_sum": 40.0 * echo, f"lat:{bucket_of(30 + n * 4)}": echo,
                  f"lat:{bucket_of(900)}": 3 * fails, "processed:echo": echo, "tasks:echo": echo,
                  f"lat:echo:{bucket_of(30 + n * 4)}": echo}  # fmt: skip
        if fails:
            fields.update({"processed:fail": 3, "failed:fail": 3, "tasks:fail": 1, "tasks_failed:fail": 1,
                           f"lat:fail:{bucket_of(900)}": 3})  # fmt: skip
        rclient.hset(KEYS.stats_minute(now - ago), mapping=fields)


def test_the_overview_charts(procs, env_factory, tmp_path, rclient, redis_url, token):
    pytest.importorskip("playwright")
    ensure_chromium()
    from playwright.sync_api import sync_playwright

    seed_history(rclient)
    start_agent(procs, env_factory, tmp_path, WORKER_PROCESSES=1, **FAST_RETRIES)
    wait_running(rclient, "agent")
    port = free_port()
    procs.start(
        "dashboard", env_factory(DASHBOARD_PORT=port, DASHBOARD_STREAM_INTERVAL="0.5"), tmp_path / "dash.log"
    )
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(f"{base}/health"), timeout=60, what="the dashboard answers")
    submit(redis_url, FAIL, {"message": "diagnostic"}, 6)
    submit(redis_url, ECHO, {"n": 1}, 20)
    submit(redis_url, SLEEP, {"seconds": 0.2}, 5)
    wait_for(lambda: rollup_totals(rclient).get("tasks", 0) >= 31 + sum(20 + (n * 7) % 15 + (n % 4 == 0)
                                                                       for n in range(len(SEEDED))),
             timeout=60, what="the 31 tasks ended")  # fmt: skip
    with sync_playwright() as pw:
        browser, page, errors = log_in(pw, base, token("viewer", sub="vera"), {"width": 1400, "height": 1100})
        page.wait_for_selector("#chart-errors svg")
        # live 15 min: 31 tasks, 6 failed (not 18 of 43 attempts)
        page.wait_for_function(
            "() => document.querySelector('#chart-totals').textContent.startsWith('31 tasks')"
        )
        totals = page.locator("#chart-totals").text_content() or ""
        assert totals.startswith("31 tasks, 6 failed (19 %) · 43 attempts, 18 failed (42 %) in 15 min"), (
            totals
        )
        page.wait_for_selector("#alerts li:has-text('6 of 31 failed')")

        # the axis: UTC, labelled, times as the tables show them
        assert page.locator("#chart-errors .tz").text_content() == "UTC+00:00"
        assert "UTC+00:00" in (page.locator("#chart-span").text_content() or "")
        ticks = page.locator("#chart-throughput .x-label").all_text_contents()
        assert ticks and all(re.fullmatch(r"\d\d:\d\d", t) for t in ticks), ticks
        # labelled thresholds
        assert page.locator("#chart-errors text.thr-label").all_text_contents() == [
            "warn 5 %",
            "critical 10 %",
        ]
        # both error series and the latency lines are drawn
        for sel in ("#chart-errors .line-err", "#chart-errors .line-attempt-err", "#chart-latency .line-p50",
                    "#chart-latency .line-p95", "#chart-throughput rect.bar-fail"):  # fmt: skip
            assert page.locator(f"{sel} polyline, {sel} circle, {sel}").count() > 0, sel

        hover_and_filter(page)

        # 24 h: ticks carry the date; the seeded minutes' error line has gaps (several runs)
        page.click("[data-chart-range='24h']")
        page.wait_for_selector("#charts[data-range='24h'][data-type='']")
        ticks = page.locator("#chart-throughput .x-label").all_text_contents()
        assert ticks and all(re.fullmatch(r"\d\d-\d\d \d\d:\d\d", t) for t in ticks), ticks
        page.click("[data-chart-range='1h']")
        page.wait_for_selector("#charts[data-range='1h']")
        runs = page.locator("#chart-errors .line-err polyline, #chart-errors .line-err circle").count()
        assert runs >= 4, runs  # gaps break the line: no 0 % drawn for minutes without tasks
        tip = page.locator("#chart-errors + .chart-tip")
        failing = page.evaluate(  # a seeded minute with a failed task
            "() => [...document.querySelectorAll('#chart-errors rect.hit')]"
            ".find((c) => c.querySelector('title').textContent.includes('(1 of ')).dataset.i"
        )
        page.hover(f'#chart-errors rect.hit[data-i="{failing}"]')
        tip.wait_for(state="visible")
        assert "(1 of " in (tip.text_content() or ""), tip.text_content()
        page.locator("#charts").screenshot(path=str(IMG / "dashboard-charts.png"))
        # a phone: the charts redraw to its width, the page does not scroll sideways
        page.set_viewport_size({"width": 390, "height": 900})
        page.wait_for_function(
            "() => Number(document.querySelector('#chart-errors svg').getAttribute('width')) < 390"
        )
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        assert page.locator("#chart-errors text.thr-label").count() == 2
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("#charts").screenshot(path=str(SHOTS / "charts-390.png"))
        page.emulate_media(color_scheme="dark")  # the dark theme: the charts take its colours
        page.reload()
        page.wait_for_selector("html[data-theme='dark'] #chart-latency svg")
        page.locator("#charts").screenshot(path=str(SHOTS / "charts-390-dark.png"))
        for rng in ("7d", "24h", "1h"):  # the phone's ticks fit: fewer of them, none overlapping
            page.click(f"[data-chart-range='{rng}']")
            page.wait_for_selector(f"#charts[data-range='{rng}']")
            assert page.evaluate(OVERLAPPING_TICKS) == [], rng
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e or "Uncaught" in e], errors


def hover_and_filter(page) -> None:
    """Hover and keyboard show a point's values; the type filter changes the series."""
    # hover: the tooltip shows the point's values (the same text as its <title>)
    index, title = page.evaluate(LAST_WITH_DATA, "#chart-errors")
    assert "of tasks (" in title and "UTC" in title, title
    page.hover(f'#chart-errors rect.hit[data-i="{index}"]')
    tip = page.locator("#chart-errors + .chart-tip")
    tip.wait_for(state="visible")
    assert tip.text_content() == title
    # keyboard: focus the chart, End shows the last point
    page.focus("#chart-latency svg")
    page.keyboard.press("End")
    latency_tip = page.locator("#chart-latency + .chart-tip")
    latency_tip.wait_for(state="visible")
    assert "UTC" in (latency_tip.text_content() or "")
    page.keyboard.press("Escape")

    # the type filter: fail only, every task failed (100 % of tasks, from the history API)
    before = page.locator("#chart-latency svg").inner_html()
    page.select_option("#chart-type", "fail")
    page.wait_for_selector("#charts[data-type='fail']")
    totals = page.locator("#chart-totals").text_content() or ""
    assert totals.startswith("6 tasks of fail, 6 failed (100 %) · 18 attempts, 18 failed (100 %)"), totals
    assert page.locator("#chart-latency svg").inner_html() != before
    assert "of fail" in (page.locator("#chart-latency svg").get_attribute("aria-label") or "")
    page.select_option("#chart-type", "")
