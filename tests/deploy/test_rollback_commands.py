"""One command per rollback method (issue 20, part 6): the stable pointer, a version once stable,
its git tag, a deployment of the provider's history (Render's rollback API, Vercel's promote) and
the emergency stop of every worker agent through the control channel. Real Redis, the fake
providers, the coordinator in-process; the CLI against it; a real worker agent for the stop."""

from __future__ import annotations

import asyncio
import subprocess
import uuid

import pytest

from shared.deploy.models import StepPayload
from shared.keys import Keys
from tests.conftest import SECRET
from tests.deploy.conftest import services_yaml
from tests.helpers import read_log, wait_for
from tests.worker.test_end_to_end import heartbeat, start_agent, wait_running
from worker.deploy.restore import Restore

KEYS = Keys()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository for the stable tags."""
    path = tmp_path / "repo"
    path.mkdir()
    for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(key, "ops")
    for key in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(key, "ops@example.invalid")
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    return path


@pytest.fixture
def services_file(tmp_path, fakes, repo):
    """The usual services plus a tagged Render one (overrides tests/deploy/conftest.py's)."""
    path = tmp_path / "services.yaml"
    path.write_text(services_yaml(fakes.url, extra=f"""
  tagged:
    provider: render
    render: {{service_id: srv-tagged, api_key_env: RENDER_API_KEY}}
    git_tag: {{enabled: true, repo_path: "{repo}"}}
"""))  # fmt: skip
    return path


@pytest.fixture
async def dapi(aiohttp_client, dsettings):
    from coordinator.app import create_app

    return await aiohttp_client(create_app(dsettings))


@pytest.fixture
def restore(driver):
    """The restore actor's logic on the driver's state, its follow-up messages collected."""
    later: list[dict[str, object]] = []
    return Restore(driver.state, driver.settings, lambda payload, delay: later.append(payload))


def deployed(driver, service, *versions):
    """Deploy each version to success in turn; their records."""
    records = []
    for version in versions:
        deploy_id = driver.start(service, str(uuid.uuid4()), version=version)
        driver.run()
        records.append(driver.record(deploy_id))
        assert records[-1]["status"] == "succeeded", records[-1]
    return records


async def roll(dapi, auth, service, **body):
    resp = await dapi.post(
        f"/api/v1/services/{service}/rollback", json=body, headers=auth("deploy", sub="pat")
    )
    return resp.status, await resp.json()


# -- the API's refusals ---------------------------------------------------------------------------
async def test_unknown_service_version_tag_and_bad_bodies_are_clear_4xx(dapi, auth, driver):
    deployed(driver, "site", "c1")
    status, body = await roll(dapi, auth, "ghost")
    assert status == 404 and body["error"]["message"].startswith("unknown service 'ghost'; configured: api")
    status, body = await roll(dapi, auth, "site", to="c9")
    assert status == 404 and body["error"]["fields"] == [
        {"loc": ["body", "to"], "msg": "version 'c9' of 'site' was never stable"}
    ]
    assert body["error"]["message"].endswith("known: c1")
    status, body = await roll(dapi, auth, "site", tag="site-stable-c9-20260101")
    assert status == 404 and body["error"]["fields"][0]["loc"] == ["body", "tag"]
    status, body = await roll(dapi, auth, "site", to="c1", tag="x")
    assert status == 422 and "at most one of to, tag and provider_deploy" in body["error"]["fields"][0]["msg"]
    status, body = await roll(dapi, auth, "api", provider_deploy="dep-1")
    assert status == 422 and body["error"]["fields"][0]["loc"] == ["body", "provider_deploy"]
    status, body = await roll(dapi, auth, "site", to="c1", extra=1)
    assert status == 422 and body["error"]["fields"][0]["loc"] == ["body", "extra"]
    status, body = await roll(dapi, auth, "site")  # one stable version, nothing stable before it
    assert status == 409 and "no version of 'site' was stable before c1" in body["error"]["message"]


# -- stable pointer ----------------------------------------------------------------------------
async def test_rollback_without_a_target_returns_the_stable_deploy_to_the_one_before(
    dapi, auth, driver, fakes
):
    first, second = deployed(driver, "site", "c1", "c2")
    status, body = await roll(dapi, auth, "site")
    assert status == 202 and body["method"] == "stable" and body["deploy"]["id"] == second["id"]
    driver.rollout.handle(StepPayload(deploy_id=second["id"], action="rollback"))
    assert driver.record(second["id"])["status"] == "rolled_back"
    assert driver.state.stable("site")["version"] == "c1"
    assert fakes.render_calls[-2][1:] == (
        "/v1/services/srv-test/rollback",
        {"deployId": first["provider_deploy_id"]},
    )


async def test_rollback_without_a_target_rolls_a_running_deploy_back(dapi, auth, driver):
    deployed(driver, "api", "v1")
    deploy_id = driver.start("api", str(uuid.uuid4()), version="v2")
    driver.run(until=lambda: driver.record(deploy_id)["status"] == "canary")
    status, body = await roll(dapi, auth, "api")
    assert status == 202 and body["method"] == "stable" and body["deploy"]["id"] == deploy_id
    driver.rollout.handle(StepPayload(deploy_id=deploy_id, action="rollback"))
    record = driver.record(deploy_id)
    assert record["status"] == "rolled_back" and record["error"] == "rolled back by pat"
    assert driver.state.stable("api")["version"] == "v1"


# -- a version, a tag, a provider deployment -----------------------------------------------------
async def test_rollback_to_a_version_uses_renders_rollback_of_its_deploy(dapi, auth, driver, fakes, restore):
    first, _ = deployed(driver, "site", "c1", "c2")
    status, body = await roll(dapi, auth, "site", to="c1")
    assert status == 202 and body["method"] == "version", body
    record = body["deploy"]
    assert record["kind"] == "rollback" and record["version"] == "c1" and record["status"] == "queued"
    assert record["rollback_provider_id"] == first["provider_deploy_id"]
    status, busy = await roll(dapi, auth, "site", to="c1")  # it holds the service
    assert status == 409 and "has an active deploy" in busy["error"]["message"]
    restore.handle(record["id"])
    restore.handle(record["id"])  # redelivered: nothing asked twice
    done = driver.record(record["id"])
    assert done["status"] == "succeeded", done
    rollbacks = [c for c in fakes.render_calls if c[1].endswith("/rollback")]
    assert rollbacks == [
        ("POST", "/v1/services/srv-test/rollback", {"deployId": first["provider_deploy_id"]})
    ]
    stable = driver.state.stable("site")
    assert stable["version"] == "c1" and stable["deploy_id"] == record["id"]
    assert fakes.render_deploys[stable["provider_deploy_id"]]["trigger"] == "rollback"  # the new live deploy
    assert driver.state.client.get(KEYS.deploy_active("site")) is None  # the service is free again


async def test_rollback_to_a_git_tag(dapi, auth, driver, fakes, restore):
    first, _ = deployed(driver, "tagged", "c1", "c2")
    assert first["git_tag"].startswith("tagged-stable-c1-")
    status, body = await roll(dapi, auth, "tagged", tag=first["git_tag"])
    assert status == 202 and body["method"] == "tag" and body["deploy"]["version"] == "c1"
    restore.handle(body["deploy"]["id"])
    assert driver.record(body["deploy"]["id"])["status"] == "succeeded"
    assert driver.state.stable("tagged")["version"] == "c1"
    assert fakes.render_calls[-2][2] == {"deployId": first["provider_deploy_id"]}


async def test_rollback_to_a_vercel_deployment_promotes_it(dapi, auth, driver, fakes, restore):
    first, _ = deployed(driver, "web", "s1", "s2")
    old = first["provider_deploy_id"]
    status, body = await roll(dapi, auth, "web", provider_deploy=old)
    assert status == 202 and body["method"] == "provider" and body["deploy"]["version"] == "s1"
    restore.handle(body["deploy"]["id"])
    assert driver.record(body["deploy"]["id"])["status"] == "succeeded"
    assert fakes.vercel_calls[-1][:2] == ("POST", f"/v10/projects/prj_test/promote/{old}")
    assert driver.state.stable("web") | {"at": None} == {
        "version": "s1",
        "deploy_id": body["deploy"]["id"],
        "provider_deploy_id": old,
        "at": None,
    }


async def test_rollback_to_a_deployment_the_provider_does_not_know_fails_clearly(dapi, auth, driver, restore):
    deployed(driver, "web", "s1")
    status, body = await roll(dapi, auth, "web", provider_deploy="dpl_gone")
    assert status == 202 and body["deploy"]["version"] is None  # not in Opsdeck's history: allowed
    restore.handle(body["deploy"]["id"])
    record = driver.record(body["deploy"]["id"])
    assert (
        record["status"] == "failed"
        and record["error"] == "rollback failed: Vercel answered 404: Deployment not found"
    )
    assert driver.state.stable("web")["version"] == "s1"  # unchanged


# -- the CLI ---------------------------------------------------------------------------------------
def cli(monkeypatch, capsys, base, *argv):
    """``opsdeck ARGV`` in this process (its own thread: the coordinator runs on this loop)."""
    from shared.devtools.cli import main

    monkeypatch.setenv("OPSDECK_URL", base)
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.delenv("OPSDECK_TOKEN", raising=False)
    try:
        main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_cli_rollback_commands_answer_in_one_line(dapi, driver, monkeypatch, capsys):
    deployed(driver, "site", "c1", "c2")
    base = str(dapi.make_url("")).rstrip("/")
    run = lambda *argv: asyncio.to_thread(cli, monkeypatch, capsys, base, *argv)  # noqa: E731
    code, out, err = await run("deploy", "rollback", "ghost")
    assert code == 1 and err.strip().startswith("opsdeck deploy rollback: 404 unknown service 'ghost'")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, out, err = await run("deploy", "rollback", "site", "--to", "c9")
    assert code == 1 and "version 'c9' of 'site' was never stable" in err and len(err.splitlines()) == 1
    code, out, err = await run("deploy", "rollback", "site", "--to", "c1")
    line = out.splitlines()[-1]  # (the in-process coordinator's log lines come first)
    assert code == 0 and line.startswith("rollback deploy ") and "site back to c1 (from version)" in line
    code, _, err = await run("deploy", "rollback", "site", "--to", "c1", "--tag", "x")
    assert code == 2 and "not allowed with argument" in err
    nowhere = "http://127.0.0.1:9"
    code, _, err = await asyncio.to_thread(cli, monkeypatch, capsys, nowhere, "deploy", "rollback", "site")
    assert "cannot reach the coordinator at http://127.0.0.1:9" in str(code) and "Traceback" not in err


# -- emergency stop ----------------------------------------------------------------------------------
@pytest.mark.slow
async def test_worker_stop_all_stops_a_real_agent_through_the_control_channel(
    procs, env_factory, tmp_path, rclient, dapi, auth, monkeypatch, capsys
):
    _, log = start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    refused = await dapi.post("/api/v1/workers/stop", json={"all": True}, headers=auth("deploy"))
    assert refused.status == 403  # admin only
    unknown = await dapi.post("/api/v1/workers/stop", json={"workers": ["ghost"]}, headers=auth("admin"))
    assert unknown.status == 404 and (await unknown.json())["error"]["fields"][0]["loc"] == [
        "body",
        "workers",
    ]
    base = str(dapi.make_url("")).rstrip("/")
    code, out, err = await asyncio.to_thread(cli, monkeypatch, capsys, base, "worker", "stop", "--all")
    assert code == 0, err
    line = out.splitlines()[-1]
    assert line.startswith("stop sent to agent: command ")
    command_id = line.split("command ")[1].split()[0]
    done = lambda: rclient.hget(KEYS.command(command_id), "status") == b"done"  # noqa: E731
    await asyncio.to_thread(wait_for, done, timeout=30, what="the stop command done")
    stopped = lambda: heartbeat(rclient, "agent").state == "stopped"  # noqa: E731
    await asyncio.to_thread(wait_for, stopped, timeout=30, what="a heartbeat saying stopped")
    assert heartbeat(rclient, "agent").processes == 0, read_log(log)
    assert rclient.hget(KEYS.worker_desired("agent"), "state") == b"stopped"
    audit = [f for _, f in rclient.xrange(KEYS.audit)]
    assert any(b'"action":"stop"' in f[b"command"] and b'"issuer":"cli"' in f[b"command"] for f in audit)


@pytest.mark.slow
async def test_rollback_to_a_version_through_a_real_worker(
    procs, env_factory, tmp_path, rclient, dapi, auth, fakes, deploy_env
):
    """The deploy_restore actor of a real agent: two Render deploys, then back to the first."""
    from tests.deploy.test_worker_e2e import agent_env

    _, log = start_agent(procs, env_factory, tmp_path, **agent_env(fakes, tmp_path, deploy_env, 0))
    wait_running(rclient, "agent")
    headers = auth("deploy", sub="pat")

    async def ended(deploy_id):
        done = lambda: rclient.hget(KEYS.deploy(deploy_id), "status") in (b"succeeded", b"failed")  # noqa: E731
        await asyncio.to_thread(wait_for, done, timeout=60, what=f"deploy {deploy_id} to end")
        return await (await dapi.get(f"/api/v1/deploys/{deploy_id}", headers=headers)).json()

    records = []
    for version in ("c1", "c2"):
        resp = await dapi.post(
            "/api/v1/deploys", json={"service": "site", "version": version}, headers=headers
        )
        records.append(await ended((await resp.json())["id"]))
    assert [r["status"] for r in records] == ["succeeded", "succeeded"], read_log(log)
    status, body = await roll(dapi, auth, "site", to="c1")
    assert status == 202, body
    record = await ended(body["deploy"]["id"])
    assert record["status"] == "succeeded" and record["kind"] == "rollback", (record, read_log(log))
    assert rclient.hget(KEYS.deploy_stable("site"), "version") == b"c1"
    rollbacks = [c for c in fakes.render_calls if c[1].endswith("/rollback")]
    assert [c[2] for c in rollbacks] == [{"deployId": records[0]["provider_deploy_id"]}]
