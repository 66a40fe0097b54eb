"""Blue-green rollouts through a real worker agent (Redis transport): a process SIGKILLed during
the scale-down delay leaves the retire message to the restarted one (one switch, one preview
deploy, succeeded); a rollback through the API during the delay switches back in one write."""

from __future__ import annotations

import os
import signal

import pytest

from shared.keys import Keys
from tests.conftest import BROKERS_SOAK
from tests.deploy.conftest import services_yaml
from tests.deploy.test_blue_green import STABLE, blue_green_yaml, reloads
from tests.deploy.test_worker_e2e import deploy_status, waiting
from tests.helpers import read_log, wait_for
from tests.worker.test_end_to_end import start_agent, wait_running

KEYS = Keys()
pytestmark = pytest.mark.slow


@pytest.fixture
async def dapi(aiohttp_client, dsettings, broker_url):
    from coordinator.app import create_app

    return await aiohttp_client(create_app(dsettings.model_copy(update={"broker_url": broker_url})))


@pytest.fixture
def delay() -> float:
    """The services' scale-down delay (a test parametrizes another)."""
    return 3.0


@pytest.fixture
def var(tmp_path):
    path = tmp_path / "router"
    path.mkdir()
    return path


@pytest.fixture
def services_file(tmp_path, fakes, var, delay):
    """The usual services plus the blue-green ones, for the coordinator and the agent alike."""
    path = tmp_path / "services-bg.yaml"
    path.write_text(services_yaml(fakes.url, extra=blue_green_yaml(fakes.url, var, delay=delay)))
    return path


def agent_env(fakes, services_file, deploy_env):
    return {**deploy_env, "OPSDECK_SERVICES": services_file, "RENDER_API_URL": fakes.url,
            "VERCEL_API_URL": fakes.url, "DEPLOY_POLL_INTERVAL": "0.1", "DEPLOY_LOCK_TTL": "2"}  # fmt: skip


def phase(rclient, deploy_id, wanted):
    return wait_for(
        lambda: rclient.hget(KEYS.deploy(deploy_id), "phase") == wanted.encode(),
        timeout=40,
        what=f"deploy {deploy_id} in phase {wanted}",
    )


@pytest.mark.parametrize("broker_url", BROKERS_SOAK, indirect=True)
async def test_sigkill_during_the_scale_down_delay_then_retired_once(
    procs, env_factory, tmp_path, rclient, dapi, auth, fakes, deploy_env, services_file, var
):
    _, log = start_agent(procs, env_factory, tmp_path, **agent_env(fakes, services_file, deploy_env))
    first = wait_running(rclient, "agent")
    resp = await dapi.post("/api/v1/deploys", json={"service": "bg", "version": "v2"}, headers=auth("deploy"))
    deploy_id = (await resp.json())["id"]
    await waiting(phase, rclient, deploy_id, "switched")
    os.kill(first.procs[0].pid, signal.SIGKILL)  # the retire message waits in the delay queue
    await waiting(deploy_status, rclient, deploy_id, "succeeded", "failed", "rolled_back")
    record = await (await dapi.get(f"/api/v1/deploys/{deploy_id}", headers=auth("deploy"))).json()
    assert (record["status"], record["phase"]) == ("succeeded", "retired"), (record, read_log(log))
    assert reloads(var) == 1
    assert [(c["action"], c["weight"]) for c in fakes.webhook_calls] == [("deploy", 0)]
    assert rclient.hget(KEYS.deploy_stable("bg"), "version") == b"v2"


@pytest.mark.parametrize("delay", [60.0])
@pytest.mark.parametrize("broker_url", BROKERS_SOAK, indirect=True)
async def test_rollback_through_the_api_during_the_delay_switches_back(
    procs, env_factory, tmp_path, rclient, dapi, auth, fakes, deploy_env, services_file, var
):
    _, log = start_agent(procs, env_factory, tmp_path, **agent_env(fakes, services_file, deploy_env))
    wait_running(rclient, "agent")
    rclient.hset(
        KEYS.deploy_stable("bg"), mapping={"version": "v1", "deploy_id": "old", "provider_deploy_id": "x"}
    )
    headers = auth("deploy", sub="erin")
    resp = await dapi.post("/api/v1/deploys", json={"service": "bg", "version": "v2"}, headers=headers)
    deploy_id = (await resp.json())["id"]
    await waiting(phase, rclient, deploy_id, "switched")
    shown = await (await dapi.get(f"/api/v1/deploys/{deploy_id}", headers=headers)).json()
    assert shown["status"] == "promoting" and shown["retire_at"].endswith("Z")
    rolled = await dapi.post(f"/api/v1/deploys/{deploy_id}/rollback", headers=headers)
    assert rolled.status == 202, await rolled.text()
    await waiting(deploy_status, rclient, deploy_id, "rolled_back", "failed")
    record = await (await dapi.get(f"/api/v1/deploys/{deploy_id}", headers=headers)).json()
    assert (record["status"], record["phase"], record["error"]) == (
        "rolled_back",
        "switched_back",
        "rolled back by erin",
    ), read_log(log)
    assert reloads(var) == 2
    assert f"server {STABLE} weight=100;" in (var / "upstream.conf").read_text()
    assert rclient.hget(KEYS.deploy_stable("bg"), "version") == b"v1"
