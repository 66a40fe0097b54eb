"""Deploys through a real worker agent, on both transports: the task path, a canary that survives a
SIGKILL, one paused during a step's pause (its analysis run), an analysis run that survives a
SIGKILL mid-round, and the CLI following a rollout. Canary steps are
delayed messages (the Redis broker's delay queue; RabbitMQ's ``.DQ``, held by the worker until
due); operator actions are P0 messages submitted like tasks (on RabbitMQ through the outbox)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from shared.keys import Keys
from tests.conftest import BROKERS, BROKERS_SOAK
from tests.deploy.conftest import services_yaml
from tests.helpers import read_log, wait_for
from tests.worker.test_end_to_end import start_agent, wait_running, wait_status

KEYS = Keys()
pytestmark = pytest.mark.slow


@pytest.fixture
async def dapi(aiohttp_client, dsettings, broker_url):
    """The coordinator on the test's transport (with RabbitMQ, its outbox relay runs too)."""
    from coordinator.app import create_app

    return await aiohttp_client(create_app(dsettings.model_copy(update={"broker_url": broker_url})))


def agent_env(fakes, tmp_path, deploy_env, pause):
    path = tmp_path / "services-e2e.yaml"
    path.write_text(services_yaml(fakes.url, pause=pause))
    return {**deploy_env, "OPSDECK_SERVICES": path, "RENDER_API_URL": fakes.url, "VERCEL_API_URL": fakes.url,
            "DEPLOY_POLL_INTERVAL": "0.1", "DEPLOY_LOCK_TTL": "2"}  # fmt: skip


def deploy_status(rclient, deploy_id, *statuses):
    return wait_for(
        lambda: (s := rclient.hget(KEYS.deploy(deploy_id), "status")) and s.decode() in statuses,
        timeout=40,
        what=f"deploy {deploy_id} to reach {statuses}",
    )


async def waiting(wait, *args, **kwargs):
    """A blocking wait in a thread: the in-process coordinator (``dapi``, and with RabbitMQ its
    outbox relay) runs on the test's event loop and must keep running while the test waits."""
    return await asyncio.to_thread(wait, *args, **kwargs)


def step_sent(rclient, deploy_id, step):
    return wait_for(
        lambda: rclient.hget(KEYS.deploy(deploy_id), "next_sent") == str(step).encode(),
        timeout=30,
        what=f"step {step} sent",
    )


def round_sent(rclient, deploy_id, step, sample):
    """Round ``sample`` of step ``step``'s analysis run has been sent (it waits for its due time)."""
    import json

    def sent():
        raw = rclient.hget(KEYS.deploy(deploy_id), "analysis")
        a = json.loads(raw) if raw else {}
        return a.get("step") == step and (a.get("sent") or 0) >= sample

    return wait_for(sent, timeout=30, what=f"round {sample} of step {step} sent")


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_deploy_task_runs_through_a_real_worker(procs, env_factory, tmp_path, rclient, dapi, auth,
                                                      fakes, deploy_env):  # fmt: skip
    _, log = start_agent(procs, env_factory, tmp_path, **agent_env(fakes, tmp_path, deploy_env, 0))
    body = {"type": "deploy", "payload": {"service": "test", "version": "1.2.3"}, "priority": "P2"}
    task_id = (await (await dapi.post("/api/v1/tasks", json=body, headers=auth())).json())["id"]
    task = await waiting(wait_status, rclient, task_id, "succeeded", "failed", "dead")
    assert task["status"] == "succeeded", read_log(log)
    await waiting(deploy_status, rclient, task_id, "succeeded")
    record = await (await dapi.get(f"/api/v1/deploys/{task_id}", headers=auth("deploy"))).json()
    assert record["trigger"] == "tester" and record["version"] == "1.2.3"
    assert [c["weight"] for c in fakes.webhook_calls] == [100]
    assert rclient.hget(KEYS.deploy_stable("test"), "version") == b"1.2.3"


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_canary_survives_a_sigkill_with_one_provider_call_per_step(
    procs, env_factory, tmp_path, rclient, dapi, auth, fakes, deploy_env
):
    _, log = start_agent(procs, env_factory, tmp_path, **agent_env(fakes, tmp_path, deploy_env, 1.0))
    first = wait_running(rclient, "agent")
    resp = await dapi.post(
        "/api/v1/deploys", json={"service": "api", "version": "v2"}, headers=auth("deploy")
    )
    deploy_id = (await resp.json())["id"]
    # Step 1 (5 %) has run and step 2 waits out its pause: kill the process holding it.
    await waiting(step_sent, rclient, deploy_id, 2)
    os.kill(first.procs[0].pid, signal.SIGKILL)
    await waiting(deploy_status, rclient, deploy_id, "succeeded", "failed", "rolled_back")
    record = await (await dapi.get(f"/api/v1/deploys/{deploy_id}", headers=auth("deploy"))).json()
    assert record["status"] == "succeeded", (record, read_log(log))
    assert [(c["step"], c["weight"]) for c in fakes.webhook_calls] == [(0, 1), (1, 5), (2, 25), (3, 100)]
    assert [g["weight"] for g in record["gates"]] == [1, 5, 25, 100]
    assert rclient.hget(KEYS.deploy_stable("api"), "version") == b"v2"


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_canary_paused_during_a_step_pause_holds_then_resumes(
    procs, env_factory, tmp_path, rclient, dapi, auth, fakes, deploy_env
):
    """The pause is step 0's analysis run (its gates sampled at 0 and 1 s): the run's delayed
    round comes due while the deploy is paused and does nothing; resume sends the step again
    (P0), the run goes on and the rollout ends with one provider call per step."""
    pause = 1.0
    _, log = start_agent(procs, env_factory, tmp_path, **agent_env(fakes, tmp_path, deploy_env, pause))
    wait_running(rclient, "agent")
    headers = auth("deploy", sub="pat")
    resp = await dapi.post("/api/v1/deploys", json={"service": "api", "version": "v3"}, headers=headers)
    deploy_id = (await resp.json())["id"]
    # Step 0 (1 %) has run its first round; the second is sent, delayed: pause the deploy in between.
    await waiting(round_sent, rclient, deploy_id, 0, 1)
    paused = await dapi.post(f"/api/v1/deploys/{deploy_id}/pause", headers=headers)
    assert paused.status == 202, await paused.text()
    assert (await paused.json())["status"] == "paused"
    await asyncio.sleep(pause + 1.5)  # the delayed round came due (and was consumed) while paused
    record = await (await dapi.get(f"/api/v1/deploys/{deploy_id}", headers=headers)).json()
    assert record["status"] == "paused" and record["step"] == 0, (record, read_log(log))
    assert record["analysis"]["next"] == 1  # the round was not taken
    assert [(c["step"], c["weight"]) for c in fakes.webhook_calls] == [(0, 1)]
    resumed = await dapi.post(f"/api/v1/deploys/{deploy_id}/resume", headers=headers)
    assert resumed.status == 202, await resumed.text()
    await waiting(deploy_status, rclient, deploy_id, "succeeded", "failed", "rolled_back")
    record = await (await dapi.get(f"/api/v1/deploys/{deploy_id}", headers=headers)).json()
    assert record["status"] == "succeeded", (record, read_log(log))
    assert [(c["step"], c["weight"]) for c in fakes.webhook_calls] == [(0, 1), (1, 5), (2, 25), (3, 100)]
    assert [g["weight"] for g in record["gates"]] == [1, 5, 25, 100]
    assert [(g["step"], g["rounds"]) for g in record["gates"]] == [(0, 2), (1, 2), (2, 2), (3, 1)]
    assert rclient.hget(KEYS.deploy_stable("api"), "version") == b"v3"


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_an_analysis_run_survives_a_sigkill_mid_round_without_counting_twice(
    procs, env_factory, tmp_path, rclient, aiohttp_client, dsettings, broker_url, auth, fakes, deploy_env
):
    """The fake Prometheus holds the query of step 0's round 2 and the worker taking that round is
    SIGKILLed: the redelivered message takes the round again (nothing of it was written) and the
    run goes on from the round it had reached: every (step, round, metric) measured once."""
    from coordinator.app import create_app
    from shared.deploy.config import load_services
    from tests.deploy.test_analysis import analysed_yaml

    env = agent_env(fakes, tmp_path, deploy_env, 0)
    env["OPSDECK_SERVICES"].write_text(services_yaml(fakes.url, extra=analysed_yaml(fakes.url)))
    services = load_services(env["OPSDECK_SERVICES"])
    settings = dsettings.model_copy(update={"broker_url": broker_url})
    settings._services = services  # the coordinator knows the analysed services too
    dapi = await aiohttp_client(create_app(settings))
    _, log = start_agent(procs, env_factory, tmp_path, **env)
    first = wait_running(rclient, "agent")
    fakes.script.block_queries, fakes.script.block_after = 1, 2  # hold round 2's error_rate query
    resp = await dapi.post(
        "/api/v1/deploys", json={"service": "watched", "version": "v4"}, headers=auth("deploy")
    )
    deploy_id = (await resp.json())["id"]
    assert await waiting(fakes.queried.wait, 30), read_log(log)
    os.kill(first.procs[0].pid, signal.SIGKILL)
    fakes.release.set()
    await waiting(deploy_status, rclient, deploy_id, "succeeded", "failed", "rolled_back", "paused")
    record = await (await dapi.get(f"/api/v1/deploys/{deploy_id}", headers=auth("deploy"))).json()
    assert record["status"] == "succeeded", (record, read_log(log))
    keys = [(m["step"], m["index"], m["metric"]) for m in record["measurements"]]
    assert sorted(keys) == sorted({(s, i, m) for s, n in ((0, 5), (1, 5), (2, 1)) for i in range(n)
                                   for m in ("smoke[0]", "error_rate")})  # fmt: skip
    assert [(g["step"], g["rounds"]) for g in record["gates"]] == [(0, 5), (1, 5), (2, 1)]
    assert [(c["step"], c["weight"]) for c in fakes.webhook_calls] == [(0, 10), (1, 50), (2, 100)]
    assert fakes.metric_queries.count('error_rate{service="watched"}') == 12  # round 2 of step 0 twice


def live(port):
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


# RabbitMQ under `make soak` only: the CLI polls the API, whatever the transport; the canary's
# delayed steps on RabbitMQ are checked by the two tests above
@pytest.mark.parametrize("broker_url", BROKERS_SOAK, indirect=True)
def test_cli_deploy_watch_follows_the_rollout(procs, env_factory, tmp_path, rclient, fakes, deploy_env):
    import subprocess
    import sys

    from shared.devtools.embedded_redis import free_port

    env = env_factory(**agent_env(fakes, tmp_path, deploy_env, 0.2))
    port = free_port()
    procs.start("coordinator", {**env, "COORDINATOR_PORT": str(port)}, tmp_path / "coordinator.log")
    start_agent(procs, env_factory, tmp_path, **agent_env(fakes, tmp_path, deploy_env, 0.2))
    wait_running(rclient, "agent")
    cli_env = {**env, "OPSDECK_URL": f"http://127.0.0.1:{port}"}
    wait_for(lambda: live(port), what="coordinator up")
    done = subprocess.run(
        [sys.executable, "-m", "shared.devtools.cli", "deploy", "api", "--version", "v9", "--watch"],
        env=cli_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("deploy ") and "queued" in lines[0]
    assert "succeeded" in lines[-1] and "[x]1% [x]5% [x]25% [x]100%" in lines[-1]
    unknown = subprocess.run([sys.executable, "-m", "shared.devtools.cli", "deploy", "ghost"], env=cli_env,
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert unknown.returncode == 1 and "body.service: unknown service" in unknown.stderr


@pytest.mark.parametrize("broker_url", BROKERS_SOAK, indirect=True)
async def test_worker_killed_after_render_accepted_the_deploy_adopts_it(
    procs, env_factory, tmp_path, rclient, dapi, auth, fakes, deploy_env
):
    """The fake Render records the deploy and holds its answer; the worker is SIGKILLed right
    then (the call marker says "pending"). The redelivered step finds the deploy at Render (the
    service's deploys of that commit created since the marker) and adopts it: one deploy."""
    fakes.script.block_creates = 1
    _, log = start_agent(procs, env_factory, tmp_path, **agent_env(fakes, tmp_path, deploy_env, 0))
    first = wait_running(rclient, "agent")
    resp = await dapi.post(
        "/api/v1/deploys", json={"service": "site", "version": "c0ffee1"}, headers=auth("deploy")
    )
    deploy_id = (await resp.json())["id"]
    assert await waiting(fakes.created.wait, 30), read_log(log)
    os.kill(first.procs[0].pid, signal.SIGKILL)
    fakes.release.set()  # Render's answer goes to a dead socket
    await waiting(deploy_status, rclient, deploy_id, "succeeded", "failed", "rolled_back")
    record = await (await dapi.get(f"/api/v1/deploys/{deploy_id}", headers=auth("deploy"))).json()
    assert record["status"] == "succeeded", (record, read_log(log))
    created = fakes.deploy_calls("render")
    assert len(created) == 1, created
    [only] = fakes.render_deploys
    assert record["provider_ids"] == {"0": only}
    assert rclient.hget(KEYS.deploy_stable("site"), "provider_deploy_id") == only.encode()
