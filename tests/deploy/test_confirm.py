"""Manual gates (``confirm`` in the services file): a rollout waits in ``awaiting_confirmation``
until an operator promotes (API, dashboard, ``opsdeck deploy --confirm``) or its
``confirm_timeout_seconds`` runs out (aborted). Real Redis, the fake providers, the coordinator
in-process; the rollout in-process (Driver) or in a real worker agent."""

from __future__ import annotations

import asyncio
import io
import uuid

import pytest

from shared.deploy.config import load_services
from shared.deploy.models import StepPayload
from shared.errors import ConfigError
from shared.keys import Keys
from tests.conftest import BROKERS_SOAK
from tests.deploy.conftest import services_yaml
from tests.helpers import read_log, wait_for
from tests.worker.test_end_to_end import start_agent, wait_running

KEYS = Keys()


def gated_yaml(url: str, timeout: float = 3600) -> str:
    hook = f'{{url: "{url}/hook", secret_env: DEPLOY_WEBHOOK_SECRET}}'
    return f"""
  gated:
    provider: webhook
    webhook: {hook}
    strategy: canary
    canary: {{steps: [1, 50, 100], pause_seconds: 0}}
    gates: {{smoke_urls: ["{url}/health"]}}
    confirm: before_promotion
    confirm_timeout_seconds: {timeout}
  stepwise:
    provider: webhook
    webhook: {hook}
    strategy: canary
    canary: {{steps: [10, 50, 100], pause_seconds: 0}}
    confirm: each_step
  preview:
    provider: vercel
    vercel: {{project_id: prj_test, promote: true, git_source: {{type: github, repoId: "1", ref: main}}}}
    strategy: direct
    confirm: before_promotion
"""


@pytest.fixture
def services_file(tmp_path, fakes):
    """The usual services plus gated ones (overrides tests/deploy/conftest.py's)."""
    path = tmp_path / "services.yaml"
    path.write_text(services_yaml(fakes.url, extra=gated_yaml(fakes.url)))
    return path


@pytest.fixture
async def dapi(aiohttp_client, dsettings):
    from coordinator.app import create_app

    return await aiohttp_client(create_app(dsettings))


def new_id() -> str:
    return str(uuid.uuid4())


def until_waiting(driver, deploy_id):
    """Run until the rollout awaits a confirmation; its timeout messages (due in the future, the
    Driver ignores delays) are taken out of the queue and returned."""
    driver.run(until=lambda: driver.record(deploy_id)["status"] == "awaiting_confirmation")
    timeouts = [m for m in driver.queue if m[0].get("action") == "timeout"]
    for m in timeouts:
        driver.queue.remove(m)
    return timeouts


# -- the services file ------------------------------------------------------------------------------
def test_old_files_do_not_wait_and_confirm_is_validated(tmp_path, services_file):
    services = load_services(services_file).services
    assert services["api"].confirm is None and services["api"].confirm_timeout_seconds == 3600
    assert services["gated"].confirm == "before_promotion" and services["stepwise"].confirm == "each_step"
    bad = tmp_path / "bad.yaml"
    for old, text, expected in (
        ("confirm: before_promotion", "confirm: always",
         "service 'gated': confirm: Input should be 'before_promotion' or 'each_step'"),
        ("confirm_timeout_seconds: 3600", "confirm_timeout_seconds: 0",
         "service 'gated': confirm_timeout_seconds: Input should be greater than 0"),
    ):  # fmt: skip
        bad.write_text(services_file.read_text().replace(old, text, 1))
        with pytest.raises(ConfigError) as info:
            load_services(bad)
        assert expected in str(info.value)


# -- the state machine, in-process ------------------------------------------------------------------
async def test_before_promotion_waits_then_promote_through_the_api_succeeds(
    driver, fakes, dapi, auth, rclient
):
    deploy_id = driver.start("gated", new_id(), version="v2")
    assert until_waiting(driver, deploy_id) == [
        ({"deploy_id": deploy_id, "step": 2, "action": "timeout"}, 3600)
    ]
    rec = driver.record(deploy_id)
    assert (rec["step"], rec["confirm_step"], rec["weight"]) == (2, 2, 50)
    assert [c["weight"] for c in fakes.webhook_calls] == [1, 50]  # 100 % not sent
    driver.queue.append(({"deploy_id": deploy_id, "step": 2}, 0))  # a redelivered step message
    driver.run()  # does not move a waiting rollout
    assert driver.record(deploy_id)["status"] == "awaiting_confirmation"
    headers = auth("deploy", sub="carol")
    shown = await (await dapi.get(f"/api/v1/deploys/{deploy_id}", headers=headers)).json()
    assert shown["status"] == "awaiting_confirmation" and shown["confirm_deadline"].endswith("Z")
    assert (await dapi.post(f"/api/v1/deploys/{deploy_id}/pause", headers=headers)).status == 409
    promoted = await dapi.post(f"/api/v1/deploys/{deploy_id}/promote", headers=headers)
    assert promoted.status == 202, await promoted.text()
    assert (await promoted.json())["confirmed_step"] == 2
    [message] = queued_step_messages(rclient)
    assert message == {"deploy_id": deploy_id, "step": 2, "action": "promote"}
    driver.queue.append((message, 0))  # what the worker consumes
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert [c["weight"] for c in fakes.webhook_calls] == [1, 50, 100]
    assert rec["last_action_by"] == "carol"
    assert driver.state.stable("gated")["version"] == "v2"


def queued_step_messages(rclient):
    from dramatiq import Message

    return [
        Message.decode(rclient.hget(KEYS.queue_messages("deploy.p0"), i)).args[0]
        for i in rclient.lrange(KEYS.queue("deploy.p0"), 0, -1)
    ]


def confirm(driver, rclient, deploy_id):
    """What the promote action does (shared/deploy/lua/deploy_action.lua), then its message."""
    rec = driver.record(deploy_id)
    rclient.hset(
        KEYS.deploy(deploy_id), mapping={"status": "in_progress", "confirmed_step": rec["confirm_step"]}
    )
    driver.queue.append(({"deploy_id": deploy_id, "step": rec["step"], "action": "promote"}, 0))


def test_each_step_waits_before_every_step_after_the_first(driver, fakes, rclient):
    deploy_id = driver.start("stepwise", new_id())
    waits = []
    for _ in range(2):
        until_waiting(driver, deploy_id)
        rec = driver.record(deploy_id)
        waits.append((rec["confirm_step"], [c["weight"] for c in fakes.webhook_calls]))
        confirm(driver, rclient, deploy_id)
    driver.run()
    assert waits == [(1, [10]), (2, [10, 50])]
    assert driver.record(deploy_id)["status"] == "succeeded"
    assert [c["weight"] for c in fakes.webhook_calls] == [10, 50, 100]


def test_a_one_step_rollout_waits_after_its_gates_before_promotion(driver, fakes, rclient):
    deploy_id = driver.start("preview", new_id(), version="sha9")
    until_waiting(driver, deploy_id)
    rec = driver.record(deploy_id)
    assert rec["confirm_step"] == 0 and rec["live"] == "1" and rec["gates"][0]["ok"]
    assert not [c for c in fakes.vercel_calls if "/promote/" in c[1]]  # the preview waits
    confirm(driver, rclient, deploy_id)
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert len(fakes.deploy_calls("vercel")) == 1  # the same deployment, promoted
    assert [c[1] for c in fakes.vercel_calls if "/promote/" in c[1]] == [
        f"/v10/projects/prj_test/promote/{rec['provider_ids']['0']}"
    ]


def test_a_promote_during_the_canary_is_the_confirmation(driver, fakes, rclient):
    deploy_id = driver.start("gated", new_id())
    driver.run(until=lambda: len(fakes.webhook_calls) == 1)
    rclient.hset(KEYS.deploy(deploy_id), "promote", "1")  # an operator promoted at 1 %
    driver.run()
    assert driver.record(deploy_id)["status"] == "succeeded"
    assert [c["weight"] for c in fakes.webhook_calls] == [1, 100]


def test_timeout_aborts_and_returns_traffic_an_early_one_waits(driver, fakes, rclient):
    driver.state.set_stable("gated", {"version": "v1", "deploy_id": "old", "provider_deploy_id": "x"})
    deploy_id = driver.start("gated", new_id(), version="v2")
    [(timeout, _)] = until_waiting(driver, deploy_id)
    driver.rollout.handle(StepPayload.model_validate(timeout))  # before its deadline (a clock ahead)
    assert driver.record(deploy_id)["status"] == "awaiting_confirmation"
    assert driver.queue[0][0] == timeout and driver.queue[0][1] > 3000  # sent again for the rest
    rclient.hset(KEYS.deploy(deploy_id), "confirm_deadline", "1")  # the deadline has passed
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "canceled", rec
    assert (
        rec["error"] == "not confirmed within 3600s (confirm: before_promotion): aborted before step 2 (100%)"
    )
    assert fakes.webhook_calls[-1]["action"] == "rollback" and fakes.webhook_calls[-1]["version"] == "v1"
    assert [c["weight"] for c in fakes.webhook_calls if c["action"] == "deploy"] == [1, 50]
    assert driver.state.stable("gated")["version"] == "v1"
    assert rclient.get(KEYS.deploy_active("gated")) is None


# -- the dashboard ----------------------------------------------------------------------------------
async def test_dashboard_shows_the_wait_and_its_promote_button_confirms(
    driver, fakes, dsettings, aiohttp_client, token, rclient
):
    from dashboard.app import create_app
    from tests.dashboard.conftest import login

    deploy_id = driver.start("gated", new_id(), version="v3")
    until_waiting(driver, deploy_id)
    client = await aiohttp_client(create_app(dsettings))
    csrf = await login(client, token("operator", sub="erin"))
    page = await (await client.get(f"/deploys/{deploy_id}")).text()
    assert 'id="deploy-awaiting"' in page and "Awaiting confirmation before step 3 (100 %)" in page
    button = page.split(f'data-post="/api/deploys/{deploy_id}/promote"')[1].split(">")[0]
    assert "awaiting_confirmation" in button and "hidden" not in button
    resp = await client.post(f"/api/deploys/{deploy_id}/promote", headers={"X-CSRF-Token": csrf})
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["confirmed_step"] == 2
    [message] = queued_step_messages(rclient)
    driver.queue.append((message, 0))
    driver.run()
    assert driver.record(deploy_id)["status"] == "succeeded"
    assert [c["weight"] for c in fakes.webhook_calls] == [1, 50, 100]


# -- the CLI ----------------------------------------------------------------------------------------
async def test_cli_confirm_promotes_a_waiting_deploy_and_refuses_others(driver, dapi, auth, dsettings,
                                                                       monkeypatch, capsys):  # fmt: skip
    from shared.devtools.deploy_client import confirm as cli_confirm

    monkeypatch.setenv("OPSDECK_URL", str(dapi.make_url("")).rstrip("/"))
    waiting = driver.start("gated", new_id())
    until_waiting(driver, waiting)
    running = (
        await (await dapi.post("/api/v1/deploys", json={"service": "api"}, headers=auth("deploy"))).json()
    )["id"]
    out = io.StringIO()
    assert await asyncio.to_thread(cli_confirm, dsettings, running, False, out) == 1
    assert f"deploy {running} is queued, not awaiting confirmation" in capsys.readouterr().err
    assert await asyncio.to_thread(cli_confirm, dsettings, waiting, False, out) == 0
    assert out.getvalue() == f"deploy {waiting} confirmed: gated goes on to step 2 (100%)\n"
    assert driver.record(waiting)["confirmed_step"] == 2
    assert await asyncio.to_thread(cli_confirm, dsettings, waiting, False, out) == 1  # not waiting any more


# -- a real worker ----------------------------------------------------------------------------------
def agent_env(fakes, tmp_path, deploy_env, timeout):
    path = tmp_path / "services-e2e.yaml"
    path.write_text(services_yaml(fakes.url, extra=gated_yaml(fakes.url, timeout)))
    return {**deploy_env, "OPSDECK_SERVICES": path, "RENDER_API_URL": fakes.url, "VERCEL_API_URL": fakes.url,
            "DEPLOY_POLL_INTERVAL": "0.1", "DEPLOY_LOCK_TTL": "2"}  # fmt: skip


@pytest.fixture
async def wapi(aiohttp_client, dsettings, broker_url):
    from coordinator.app import create_app

    return await aiohttp_client(create_app(dsettings.model_copy(update={"broker_url": broker_url})))


def status_in(rclient, deploy_id, *statuses):
    return wait_for(
        lambda: (s := rclient.hget(KEYS.deploy(deploy_id), "status")) and s.decode() in statuses,
        timeout=40,
        what=f"deploy {deploy_id} to reach {statuses}",
    )


@pytest.mark.slow
@pytest.mark.parametrize("broker_url", BROKERS_SOAK, indirect=True)
async def test_real_worker_waits_for_the_promote_then_succeeds(procs, env_factory, tmp_path, rclient, wapi,
                                                              auth, fakes, deploy_env):  # fmt: skip
    _, log = start_agent(procs, env_factory, tmp_path, **agent_env(fakes, tmp_path, deploy_env, 3600))
    wait_running(rclient, "agent")
    headers = auth("deploy", sub="dave")
    resp = await wapi.post("/api/v1/deploys", json={"service": "gated", "version": "v5"}, headers=headers)
    deploy_id = (await resp.json())["id"]
    await asyncio.to_thread(status_in, rclient, deploy_id, "awaiting_confirmation", "failed", "rolled_back")
    record = await (await wapi.get(f"/api/v1/deploys/{deploy_id}", headers=headers)).json()
    assert record["status"] == "awaiting_confirmation", (record, read_log(log))
    assert [c["weight"] for c in fakes.webhook_calls] == [1, 50]
    promoted = await wapi.post(f"/api/v1/deploys/{deploy_id}/promote", headers=headers)
    assert promoted.status == 202, await promoted.text()
    await asyncio.to_thread(status_in, rclient, deploy_id, "succeeded", "failed", "rolled_back", "canceled")
    record = await (await wapi.get(f"/api/v1/deploys/{deploy_id}", headers=headers)).json()
    assert record["status"] == "succeeded", (record, read_log(log))
    assert [c["weight"] for c in fakes.webhook_calls] == [1, 50, 100]
    assert [g["weight"] for g in record["gates"]] == [1, 50, 100]


@pytest.mark.slow
@pytest.mark.parametrize("broker_url", BROKERS_SOAK, indirect=True)
async def test_real_worker_aborts_an_unconfirmed_rollout_at_its_timeout(
    procs, env_factory, tmp_path, rclient, wapi, auth, fakes, deploy_env
):
    _, log = start_agent(procs, env_factory, tmp_path, **agent_env(fakes, tmp_path, deploy_env, 1))
    wait_running(rclient, "agent")
    headers = auth("deploy")
    resp = await wapi.post("/api/v1/deploys", json={"service": "gated", "version": "v6"}, headers=headers)
    deploy_id = (await resp.json())["id"]
    await asyncio.to_thread(status_in, rclient, deploy_id, "canceled", "succeeded", "failed", "rolled_back")
    record = await (await wapi.get(f"/api/v1/deploys/{deploy_id}", headers=headers)).json()
    assert record["status"] == "canceled", (record, read_log(log))
    assert (
        record["error"] == "not confirmed within 1s (confirm: before_promotion): aborted before step 2 (100%)"
    )
    assert [(c["action"], c["weight"]) for c in fakes.webhook_calls] == [("deploy", 1), ("deploy", 50),
                                                                        ("rollback", 0)]  # fmt: skip
    assert (await wapi.post(f"/api/v1/deploys/{deploy_id}/promote", headers=headers)).status == 409
