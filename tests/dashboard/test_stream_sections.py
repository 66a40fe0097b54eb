"""Page sections of the live stream (issue 19, "live everywhere"): a socket subscribes to the
sections its page shows (``/ws?s=<key>``); each distinct key is read once per tick whatever the
number of sockets on it, only its subscribers get its frames, and a key nobody subscribes to any
more is not read."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import quote, urlencode

import orjson

from dashboard.app import create_app
from dashboard.appkeys import POLLER, STORE
from shared.tasks import SLEEP, Priority
from tests.dashboard.conftest import KEYS, fake_heartbeat, login
from tests.dashboard.test_stream import origin


def ws_url(*keys: str) -> str:
    return "/ws?" + urlencode([("s", k) for k in keys])


async def submit(client, n: int = 1) -> list[str]:
    store = client.server.app[STORE]
    return [
        (await store.submit(SLEEP, {"seconds": 0}, Priority.P2, subject="t", correlation_id="c")).task_id
        for _ in range(n)
    ]


async def frames_until(ws, predicate, frames: int = 60):
    """Frames (their data) until ``predicate(data)`` holds; returns the one that matched."""
    for _ in range(frames):
        frame = await asyncio.wait_for(ws.receive_json(), 5)
        if predicate(frame["data"]):
            return frame["data"]
    raise AssertionError("no matching frame")


async def test_a_task_list_and_a_task_live(as_role, rclient):
    client, _ = await as_role("viewer")
    (first,) = await submit(client)
    task_key = f"task:{quote(first, safe='')}"
    async with (
        client.ws_connect(ws_url("tasks?status=queued"), headers=origin(client)) as tasks,
        client.ws_connect(ws_url(task_key), headers=origin(client)) as task,
    ):
        snap = await tasks.receive_json()
        assert set(snap["data"]) == {"tasks?status=queued", "meta", "status"}  # no overview sections
        assert [r["id"] for r in snap["data"]["tasks?status=queued"]["items"]] == [first]
        assert snap["live"] == {"tasks?status=queued": "the task list"} and snap["refused"] == {}
        tsnap = await task.receive_json()
        assert tsnap["data"][task_key]["status"] == "queued"
        assert [e["status"] for e in tsnap["data"][task_key]["timeline"]] == ["queued"]
        (second,) = await submit(client)  # a new row appears on the list
        data = await frames_until(tasks, lambda d: "tasks?status=queued" in d)
        assert [r["id"] for r in data["tasks?status=queued"]["items"]] == [second, first]
        rclient.hset(KEYS.task(first), mapping={"status": "running", "attempts": 1})  # a status change
        rclient.xadd(KEYS.task_events, {"id": first, "status": "running", "worker": "w9"})
        data = await frames_until(task, lambda d: task_key in d)
        assert data[task_key]["status"] == "running" and data[task_key]["attempts"] == 1
        assert [e["status"] for e in data[task_key]["timeline"]] == ["queued", "running"]
        assert data[task_key]["timeline"][1]["worker"] == "w9"
        # the other task's events are not in this one's timeline, and an unknown task says so
    async with client.ws_connect(ws_url("task:nope"), headers=origin(client)) as ws:
        snap = await ws.receive_json()
        assert snap["data"]["task:nope"] == {"error": "task nope not found"}


async def test_queue_worker_and_audit_sections(as_role, rclient):
    fake_heartbeat(rclient, "w1")
    client, csrf = await as_role("operator")
    keys = ("queue:default.p2", "worker:w1", "audit?limit=5", "workers")
    async with client.ws_connect(ws_url(*keys), headers=origin(client)) as ws:
        snap = await ws.receive_json()
        assert set(snap["data"]) == {*keys, "meta", "status"}
        assert snap["data"]["queue:default.p2"]["paused"] is False
        assert snap["data"]["worker:w1"] == {"desired": {}, "commands": []}
        resp = await client.post("/api/queue/default.p2/pause", headers={"X-CSRF-Token": csrf})
        assert resp.status == 200
        data = await frames_until(
            ws, lambda d: d.get("queue:default.p2", {}).get("paused") and "audit?limit=5" in d
        )
        assert data["audit?limit=5"]["entries"][0]["action"] == "queue.pause"
        resp = await client.post("/api/worker/w1/restart", headers={"X-CSRF-Token": csrf})
        assert resp.status == 202
        data = await frames_until(ws, lambda d: "worker:w1" in d)
        assert [c["action"] for c in data["worker:w1"]["commands"]] == ["restart"]


async def test_refused_keys_are_named(as_role):
    client, _ = await as_role("viewer")
    url = ws_url("bogus:1", "tasks?status=nope", "tasks?limit=1&limit=2", *[f"task:{i}" for i in range(9)])
    async with client.ws_connect(url, headers=origin(client)) as ws:
        snap = await ws.receive_json()
        refused = snap["refused"]
        assert refused["bogus:1"] == "unknown section 'bogus'"
        assert refused["tasks?status=nope"].startswith("status: ")
        assert refused["tasks?limit=1&limit=2"] == "a query field is repeated"
        assert "at most 8 sections per socket" in refused.values()
        assert "task:4" in snap["data"] and "task:5" not in snap["data"]  # the first 8 keys count


async def test_one_read_per_section_per_tick_whatever_the_sockets(
    aiohttp_client, dash_settings, token, rclient
):
    """Sockets spread over four pages: Redis commands per tick are the same for 1 socket per page
    as for 10; each distinct section is read once per tick."""
    fake_heartbeat(rclient, "w1")
    settings = dash_settings.model_copy(
        update={"dashboard_probe_interval": 0.0, "dashboard_stream_interval": 0.1}
    )
    client = await aiohttp_client(create_app(settings))
    await login(client, token("viewer"))
    poller = client.server.app[POLLER]
    (task_id,) = await submit(client)
    pages = [
        ("workers", "worker:w1"),
        ("tasks?limit=10",),
        (f"task:{task_id}",),
        ("queue:default.p2", "audit?limit=20"),
    ]

    def calls() -> int:
        stats = rclient.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")

    at_tick_end: list[tuple[int, int]] = []
    publish = poller._publish

    def counting_publish(state):
        if "status" in state and state["status"] == {"redis": "ok"}:  # a tick's end, not a probe
            at_tick_end.append((calls(), poller.section_reads))
        publish(state)

    poller._publish = counting_publish

    async def cost_per_tick(per_page: int) -> tuple[float, float]:
        sockets = []
        for keys in pages:
            for _ in range(per_page):
                sockets.append(ws := await client.ws_connect(ws_url(*keys), headers=origin(client)))
                await ws.receive_json()
        assert len(poller.sections) == 5
        await asyncio.sleep(0.3)
        start = len(at_tick_end)
        for _ in range(200):
            if len(at_tick_end) > start + 10:
                break
            await asyncio.sleep(0.05)
        (c0, r0), (c1, r1) = at_tick_end[start], at_tick_end[start + 10]
        for ws in sockets:
            await ws.close()
        return (c1 - c0) / 10, (r1 - r0) / 10

    (one, reads_one), (many, reads_many) = await cost_per_tick(1), await cost_per_tick(10)
    assert abs(one - many) <= 0.5, (one, many)
    assert reads_one == reads_many == 5  # one read per distinct section per tick
    await asyncio.sleep(0.3)
    assert not poller.clients and not poller.sections  # nobody left: no section kept


async def test_a_section_nobody_shows_is_not_read(as_role, rclient):
    client, _ = await as_role("viewer")
    (task_id,) = await submit(client)
    poller = client.server.app[POLLER]
    overview = await client.ws_connect("/ws", headers=origin(client))
    await overview.receive_json()
    async with client.ws_connect(ws_url(f"task:{task_id}", f"task:{task_id}"), headers=origin(client)) as ws:
        await ws.receive_json()
        assert list(poller.sections) == [f"task:{task_id}"]
    for _ in range(50):
        if not poller.sections:
            break
        await asyncio.sleep(0.02)
    assert not poller.sections
    reads, ticks = poller.section_reads, poller.ticks
    while poller.ticks < ticks + 3:  # noqa: ASYNC110 (the overview socket keeps the poller ticking)
        await asyncio.sleep(0.05)
    assert poller.section_reads == reads
    # and the overview socket got no frame of that task's section
    rclient.hset(KEYS.task(task_id), "status", "running")
    with contextlib.suppress(TimeoutError):
        while True:
            frame = await asyncio.wait_for(overview.receive_json(), 0.5)
            assert not [k for k in frame["data"] if k.startswith("task")]
    await overview.close()


async def test_distinct_task_lists_are_capped(as_role):
    """Each task-list key is a bounded scan per tick: a process reads at most MAX_TASK_LISTS."""
    from dashboard.live_sections import MAX_TASK_LISTS

    client, _ = await as_role("viewer")
    keys = [f"tasks?limit={n}" for n in range(1, MAX_TASK_LISTS + 2)]
    sockets = []
    for i in range(0, len(keys), 7):
        sockets.append(ws := await client.ws_connect(ws_url(*keys[i : i + 7]), headers=origin(client)))
        snap = await ws.receive_json()
    assert list(snap["refused"].values()) == [
        f"too many distinct live 'tasks' sections on this dashboard process (at most {MAX_TASK_LISTS})"
    ]
    assert f"tasks?limit={MAX_TASK_LISTS}" in snap["data"]
    for ws in sockets:
        await ws.close()


async def test_a_section_that_fails_is_an_error_for_that_section_alone(as_role, monkeypatch):
    """A defect in one section's read (not a Redis failure) does not stop the tick: that section
    says it could not be read, the others and the status stay live."""
    from dashboard import live_sections

    class Broken:
        def __init__(self, arg, query):
            pass

        async def read(self, ctx):
            raise RuntimeError("a bug")

    monkeypatch.setitem(live_sections.SECTIONS, "broken", live_sections.Kind("broken", Broken))
    client, _ = await as_role("viewer")
    async with client.ws_connect(ws_url("broken", "audit?limit=1"), headers=origin(client)) as ws:
        snap = await ws.receive_json()
        assert snap["data"]["broken"] == {"error": "this section could not be read"}
        assert snap["data"]["audit?limit=1"]["entries"] == [] and snap["data"]["status"] == {"redis": "ok"}
        poller = client.server.app[POLLER]
        ticks = poller.ticks
        while poller.ticks < ticks + 2:  # noqa: ASYNC110 (ticks go on)
            await asyncio.sleep(0.05)
        assert poller.ok


async def test_sockets_of_one_page_share_one_write_of_the_same_bytes():
    """The fast path per page: a change is framed once per set of sections; every idle socket of a
    page gets those very bytes on its transport, sockets of other pages only what they show."""
    from dashboard.stream import Client, Poller
    from tests.dashboard.test_stream import FakeSocket, FakeTransport, unframe

    poller = Poller(None, None, 1.0, 0.0)  # type: ignore[arg-type]
    overview = frozenset({"workers", "queues", "throughput", "alerts", "meta", "status"})
    task_page = frozenset({"task:a", "meta", "status"})
    transports = {w: [FakeTransport() for _ in range(3)] for w in (overview, task_page)}
    clients = [Client(FakeSocket(), t, w) for w, ts in transports.items() for t in ts]  # type: ignore[arg-type]
    tasks = [asyncio.create_task(c.run(b"snapshot")) for c in clients]
    await asyncio.sleep(0)
    for c in clients:
        poller.add(c)
    poller._publish({"workers": [1], "task:a": {"status": "running"}, "meta": {"time": 1.0}})
    poller._publish({"workers": [2], "meta": {"time": 2.0}})  # nothing for the task page
    for ts in transports.values():
        writes = [t.writes for t in ts]
        assert all(w[0] is writes[0][0] for w in writes)  # one object for every socket of the page
    over = [orjson.loads(unframe(w))["data"] for w in transports[overview][0].writes]
    assert over == [{"workers": [1], "meta": {"time": 1.0}}, {"workers": [2], "meta": {"time": 2.0}}]
    task = [orjson.loads(unframe(w))["data"] for w in transports[task_page][0].writes]
    assert task == [{"task:a": {"status": "running"}, "meta": {"time": 1.0}}]
    for t in tasks:
        t.cancel()
