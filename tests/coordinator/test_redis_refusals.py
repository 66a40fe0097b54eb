"""Redis refusing work is a 503 with a code and Retry-After on both apps, never a 500 (issue 14
items 5 and 6): out of memory (maxmemory reached, noeviction), LOADING (a restart replaying its
data), BUSY (a long script), READONLY and MASTERDOWN (a replica after a fail-over). Each one is
reproduced on a real redis-server of the test's own; the submit path (the batcher's own
connection and hiredis reader) and the pooled path (redis-py) are both exercised."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from coordinator.app import create_app as coordinator_app
from dashboard.app import create_app as dashboard_app
from shared.devtools.embedded_redis import EmbeddedRedis, find_redis_server, free_port
from shared.procutil import spawn, terminate

pytestmark = pytest.mark.slow

TASK = {"type": "echo", "payload": {"n": 1}}
CHAT = {"session_id": "s1", "message": "How do I open the call?", "user_id": "u1"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()


async def _apps(aiohttp_client: Any, settings: Any, url: str) -> tuple[Any, Any]:
    own = settings.model_copy(update={"redis_url": url})
    return await aiohttp_client(coordinator_app(own)), await aiohttp_client(dashboard_app(own))


async def _refused(resp: Any, code: str) -> dict[str, Any]:
    """Assert a 503 with ``code`` and Retry-After; the error body."""
    text = await resp.text()
    assert resp.status == 503, text
    error = (await resp.json())["error"]
    assert error["code"] == code, error
    assert int(resp.headers["Retry-After"]) >= 1
    assert error["message"] and error["fields"] == []
    return dict(error)


def _until(check: Any, what: str, attempts: int = 200, pause: float = 0.05) -> None:
    """Poll ``check`` (bounded) until it is true."""
    import time

    for _ in range(attempts):
        if check():
            return
        time.sleep(pause)
    raise AssertionError(f"never happened: {what}")


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    raise AssertionError(f"no sample {name}{{{wanted}}} in the exposition")


async def test_out_of_memory_is_503_redis_out_of_memory_and_health_says_so(
    aiohttp_client, settings, own_redis, auth
):
    api, dash = await _apps(aiohttp_client, settings, own_redis.url)
    writer, operator, admin = auth(), auth("operator"), auth("admin")
    first = await api.post("/api/v1/tasks", json=TASK, headers=writer)  # batcher connected, script loaded
    assert first.status == 202, await first.text()
    task_id = (await first.json())["id"]
    assert (await api.post("/api/v1/chat", json=CHAT, headers=writer)).status == 202

    control = redis.Redis.from_url(own_redis.url)
    used = int(control.info("memory")["used_memory"])
    control.config_set("maxmemory", str(used // 2))  # below what is used: noeviction refuses writes
    try:
        await _refused(await api.post("/api/v1/tasks", json=TASK, headers=writer), "redis_out_of_memory")
        await _refused(await api.post("/api/v1/chat", json=CHAT, headers=writer), "redis_out_of_memory")
        # reads are still served
        assert (await api.get("/api/v1/tasks", headers=writer)).status == 200
        assert (await dash.get("/api/tasks", headers=operator)).status == 200
        cancel = await dash.post(f"/api/tasks/{task_id}/cancel", headers=operator)
        await _refused(cancel, "redis_out_of_memory")
        # the WebSocket form of chat says so per message and keeps the socket open
        async with api.ws_connect(f"/ws/chat?token={writer['Authorization'].split()[1]}") as ws:
            await ws.send_json(CHAT)
            reply = await ws.receive_json(timeout=10)
            assert reply["type"] == "error", reply
            assert reply["error"]["code"] == "redis_out_of_memory"
            assert not ws.closed

        health = await api.get("/health")
        assert health.status == 503
        report = await health.json()
        assert report["status"] == "unhealthy"
        component = report["components"]["redis"]
        assert component["status"] == "degraded"
        assert "out of memory" in component["detail"]
        assert component["maxmemory_bytes"] == used // 2
        assert component["used_memory_bytes"] >= used // 2
        ready = await api.get("/health/ready")  # Redis answers: instances stay in the balancer
        assert (await ready.json())["components"]["redis"]["status"] == "degraded"

        metrics = await (await api.get("/metrics", headers=admin)).text()
        errors = _metric(metrics, "opsdeck_redis_errors_total", app="coordinator", code="redis_out_of_memory")
        assert errors == 2
        assert _metric(metrics, "opsdeck_redis_errors_total", app="coordinator", code="redis_loading") == 0
        dash_metrics = await (await dash.get("/metrics", headers=admin)).text()
        assert (
            _metric(dash_metrics, "opsdeck_redis_errors_total", app="dashboard", code="redis_out_of_memory")
            == 1
        )
    finally:
        control.config_set("maxmemory", "0")
        control.close()
    assert (await api.post("/api/v1/tasks", json=TASK, headers=writer)).status == 202
    assert (await api.get("/health")).status in (200, 503)  # no worker here: degraded or not, Redis is ok
    assert (await (await api.get("/health")).json())["components"]["redis"]["status"] == "ok"


async def test_memory_gauges_come_from_each_apps_probe(aiohttp_client, settings, own_redis, auth):
    from shared.web import REDIS_METRICS

    control = redis.Redis.from_url(own_redis.url)
    control.config_set("maxmemory", str(512 * 2**20))
    own = settings.model_copy(update={"redis_url": own_redis.url})
    admin = auth("admin")
    for factory, name in ((coordinator_app, "coordinator"), (dashboard_app, "dashboard")):
        app = factory(own)
        app[REDIS_METRICS].probe_interval = 0.05
        client = await aiohttp_client(app)
        for _ in range(100):
            text = await (await client.get("/metrics", headers=admin)).text()
            if "opsdeck_redis_memory_max_bytes{" in text:
                break
            await asyncio.sleep(0.05)
        assert _metric(text, "opsdeck_redis_memory_max_bytes", app=name) == 512 * 2**20
        assert _metric(text, "opsdeck_redis_memory_used_bytes", app=name) > 0
    control.close()


def _rdb_server(tmp_path: Path, keys: int) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server that loads an RDB of ``keys`` keys slowly (key-load-delay): it answers
    LOADING until told ``CONFIG SET key-load-delay 0``."""
    data = tmp_path / "rdb"
    seed = EmbeddedRedis(data, aof=False)
    seed.start()
    client = redis.Redis.from_url(seed.url)
    for start in range(0, keys, 5000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(keys, start + 5000)):
            pipe.set(f"filler:{i}", "x" * 64)
        pipe.execute()
    client.save()
    client.close()
    seed.stop()
    port = free_port()
    argv = [
        find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
        "--daemonize", "no", "--maxmemory-policy", "noeviction", "--logfile", str(data / "redis.log"),
        "--key-load-delay", "500", "--loading-process-events-interval-bytes", "1024",
    ]  # fmt: skip
    return spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port


def _loading(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.exceptions.BusyLoadingError:
        return True
    except redis.exceptions.ConnectionError:
        return False  # not listening yet
    raise AssertionError("the server finished loading before the test could use it")


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


async def test_loading_after_a_restart_is_503_redis_loading_then_recovers(
    aiohttp_client, settings, tmp_path, auth
):
    proc, port = _rdb_server(tmp_path, keys=40_000)  # 40,000 keys × 500 µs: ~20 s of LOADING
    control = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=2)
    try:
        _until(lambda: _loading(control), "LOADING")
        api, dash = await _apps(aiohttp_client, settings, f"redis://127.0.0.1:{port}/0")
        writer, viewer = auth(), auth("viewer")
        await _refused(await api.post("/api/v1/tasks", json=TASK, headers=writer), "redis_loading")
        await _refused(await api.post("/api/v1/chat", json=CHAT, headers=writer), "redis_loading")
        await _refused(await api.get("/api/v1/tasks", headers=writer), "redis_loading")
        await _refused(await dash.get("/api/tasks", headers=viewer), "redis_loading")
        health = await api.get("/health")
        assert health.status == 503
        component = (await health.json())["components"]["redis"]
        assert component["status"] == "down"
        assert "redis_loading" in component["detail"]
        assert _loading(control)  # all of the above was answered while Redis was loading

        control.config_set("key-load-delay", "0")  # let the load finish now
        _until(lambda: _answers(control), "loaded")
        accepted = await api.post("/api/v1/tasks", json=TASK, headers=writer)
        assert accepted.status == 202, await accepted.text()
        assert (await dash.get("/api/tasks", headers=viewer)).status == 200
    finally:
        control.close()
        terminate(proc, 10.0)


async def test_busy_script_is_503_redis_busy(aiohttp_client, settings, own_redis, auth, caplog):
    api, dash = await _apps(aiohttp_client, settings, own_redis.url)
    writer, viewer = auth(), auth("viewer")
    # a viewer on the overview: the live stream's poller reads Redis every tick only while some
    # socket shows a section (it reads nothing for nobody)
    watcher = await dash.ws_connect("/ws", headers={**viewer, "Origin": f"http://{dash.host}:{dash.port}"})
    assert (await watcher.receive_json())["type"] == "snapshot"
    assert (await api.post("/api/v1/tasks", json=TASK, headers=writer)).status == 202
    control = redis.Redis.from_url(own_redis.url)
    control.config_set("busy-reply-threshold", "100")  # ms; BUSY to others once a script runs longer
    # a read-only script spinning for at most 30 s (killed below: SCRIPT KILL)
    spin = "local t = tonumber(redis.call('TIME')[1]) while tonumber(redis.call('TIME')[1]) < t + 30 do end"
    outcome: list[BaseException] = []

    def run_script() -> None:
        runner = redis.Redis.from_url(own_redis.url)
        try:
            runner.eval(spin, 0)
        except redis.exceptions.ResponseError as exc:
            outcome.append(exc)
        finally:
            runner.close()

    thread = threading.Thread(target=run_script, daemon=True)
    thread.start()

    def busy() -> bool:
        try:
            control.ping()
        except redis.exceptions.ResponseError as exc:
            return str(exc).startswith("BUSY")
        return False

    try:
        _until(busy, "BUSY")
        await _refused(await api.post("/api/v1/tasks", json=TASK, headers=writer), "redis_busy")
        await _refused(await api.post("/api/v1/chat", json=CHAT, headers=writer), "redis_busy")
        await _refused(await api.get("/api/v1/tasks", headers=writer), "redis_busy")
        await _refused(await dash.get("/api/tasks", headers=viewer), "redis_busy")
        await asyncio.sleep(2.5 * settings.dashboard_stream_interval)  # a few poller ticks meet BUSY
        assert busy()
    finally:
        control.script_kill()
        thread.join(10)
    assert outcome, "the script was not killed"
    await watcher.close()
    stream_lines = [r for r in caplog.records if "stream poller" in r.getMessage()]
    assert stream_lines and not any(r.exc_info for r in stream_lines), "a traceback per tick"
    assert len(stream_lines) == 1 and "redis_busy" in stream_lines[0].getMessage()  # one line, its code
    _until(lambda: _answers(control), "script killed")
    control.close()
    assert (await api.post("/api/v1/tasks", json=TASK, headers=writer)).status == 202


async def test_readonly_and_masterdown_replica_are_503_with_their_codes(
    aiohttp_client, settings, own_redis, auth
):
    api, dash = await _apps(aiohttp_client, settings, own_redis.url)
    writer, viewer = auth(), auth("viewer")
    assert (await api.post("/api/v1/tasks", json=TASK, headers=writer)).status == 202
    control = redis.Redis.from_url(own_redis.url)
    control.replicaof("127.0.0.1", str(free_port()))  # a replica of a primary that is gone
    try:
        await _refused(await api.post("/api/v1/tasks", json=TASK, headers=writer), "redis_readonly")
        await _refused(await api.post("/api/v1/chat", json=CHAT, headers=writer), "redis_readonly")
        assert (await api.get("/api/v1/tasks", headers=writer)).status == 200  # stale reads are served
        control.config_set("replica-serve-stale-data", "no")
        await _refused(await api.get("/api/v1/tasks", headers=writer), "redis_master_down")
        await _refused(await dash.get("/api/tasks", headers=viewer), "redis_master_down")
        # a write is refused as such first
        await _refused(await api.post("/api/v1/chat", json=CHAT, headers=writer), "redis_readonly")
    finally:
        control.config_set("replica-serve-stale-data", "yes")
        control.replicaof("no", "one")
        control.close()
    assert (await api.post("/api/v1/tasks", json=TASK, headers=writer)).status == 202
