"""Blue-green rollouts (``strategy: blue_green``) against the fake providers and a real nginx
upstream file (real Redis; the rollout in-process, its scale-down delay really waited).

The nginx router's reload command appends one byte to a file per call, so the tests count the
router writes: a success is one write (the switch), a rollback after it one more (the switch back),
a failed pre-promotion analysis none."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.deploy.config import load_services
from shared.deploy.models import DeployPayload, StepPayload
from shared.errors import ConfigError
from shared.keys import Keys
from tests.deploy.conftest import services_yaml

KEYS = Keys()
STABLE = "127.0.0.1:9001"


def blue_green_yaml(url: str, var: Path, delay: float = 0.3) -> str:
    reload = f'["{sys.executable}", "-c", "open({str(var / "reloads")!r}, \'a\').write(\'x\')"]'
    host = url.removeprefix("http://")
    return f"""
  bg:
    provider: webhook
    webhook: {{url: "{url}/hook", secret_env: DEPLOY_WEBHOOK_SECRET}}
    strategy: blue_green
    router:
      type: nginx
      nginx: {{config_path: "{var / "upstream.conf"}", reload_command: {reload},
               stable_server: "{STABLE}", canary_server: "{host}"}}
    gates: {{smoke_urls: ["{{preview_url}}/health"], interval_seconds: 0.05}}
    blue_green: {{pre_promotion_seconds: 0.1, scale_down_delay_seconds: {delay}}}
  bgconfirm:
    provider: webhook
    webhook: {{url: "{url}/hook", secret_env: DEPLOY_WEBHOOK_SECRET}}
    strategy: blue_green
    router:
      type: nginx
      nginx: {{config_path: "{var / "upstream.conf"}", reload_command: {reload},
               stable_server: "{STABLE}", canary_server: "{host}"}}
    gates: {{smoke_urls: ["{{preview_url}}/health"]}}
    confirm: before_promotion
  bgweb:
    provider: vercel
    vercel: {{project_id: prj_test, promote: true, git_source: {{type: github, repoId: "1", ref: main}}}}
    strategy: blue_green
    gates: {{smoke_urls: ["{{preview_url}}/health"]}}
    blue_green: {{preview_url: "{url}", scale_down_delay_seconds: {delay}}}
"""


@pytest.fixture
def var(tmp_path: Path) -> Path:
    path = tmp_path / "router"
    path.mkdir()
    return path


@pytest.fixture
def services_file(tmp_path, fakes, var):
    """The usual services plus blue-green ones (overrides tests/deploy/conftest.py's)."""
    path = tmp_path / "services.yaml"
    path.write_text(services_yaml(fakes.url, extra=blue_green_yaml(fakes.url, var)))
    return path


def new_id() -> str:
    return str(uuid.uuid4())


def reloads(var: Path) -> int:
    """Router writes so far (each reload appended one byte)."""
    path = var / "reloads"
    return len(path.read_text()) if path.exists() else 0


def drain(driver, until=None) -> None:
    """Run queued messages; a ``retire`` message is run when due (the scale-down delay waited)."""
    for _ in range(200):
        if not driver.queue or (until is not None and until()):
            return
        payload, delay = driver.queue.popleft()
        if payload.get("action") == "retire":
            time.sleep(delay)
        driver.rollout.handle(StepPayload.model_validate(payload))
    raise AssertionError("rollout did not settle")


def switched(driver, deploy_id):
    return lambda: driver.record(deploy_id).get("phase") == "switched"


def roll_back(driver, rclient, deploy_id, who="dana"):
    """What the rollback action does (shared/deploy/lua/deploy_action.lua), then its message."""
    rclient.hset(KEYS.deploy(deploy_id), mapping={"requested": "rollback", "last_action_by": who})
    driver.rollout.handle(StepPayload.model_validate({"deploy_id": deploy_id, "action": "rollback"}))


# -- nginx: the preview on the canary server at weight 0, one upstream write to switch ----------------
def test_success_previews_analyses_switches_once_keeps_the_old_version_then_retires(driver, fakes, var):
    driver.state.set_stable("bg", {"version": "v1", "deploy_id": "old", "provider_deploy_id": "x"})
    deploy_id = driver.start("bg", new_id(), version="v2")
    drain(driver, until=switched(driver, deploy_id))
    rec = driver.record(deploy_id)
    # the preview was deployed beside the stable version, taking no traffic
    assert [(c["action"], c["weight"], c["version"]) for c in fakes.webhook_calls] == [("deploy", 0, "v2")]
    assert rec["preview_url"] == fakes.url
    # the pre-promotion analysis sampled the preview's address over pre_promotion_seconds
    assert rec["analysis"]["rounds"] == 3 and rec["analysis"]["state"] == "passed"
    assert [m["verdict"] for m in rec["measurements"]] == ["success"] * 3
    assert rec["gates"][-1]["results"][0]["url"] == f"{fakes.url}/health"
    # switched in one write; the old version kept (still the stable pointer) for the delay
    assert (rec["status"], rec["phase"], rec["weight"]) == ("promoting", "switched", 100)
    assert reloads(var) == 1
    upstream = (var / "upstream.conf").read_text()
    assert f"server {fakes.url.removeprefix('http://')} weight=100;" in upstream and STABLE not in upstream
    assert rec["retire_at"] - rec["switched_at"] == 300
    assert driver.state.stable("bg")["version"] == "v1"
    assert [p for p, _ in driver.queue] == [{"deploy_id": deploy_id, "step": 0, "action": "retire"}]
    drain(driver)
    rec = driver.record(deploy_id)
    assert (rec["status"], rec["phase"]) == ("succeeded", "retired"), rec
    assert rec["retired_at"] >= rec["retire_at"]
    assert driver.state.stable("bg")["version"] == "v2"
    assert rec["previous_stable"]["version"] == "v1"
    assert reloads(var) == 1  # retiring the old version is no router write
    assert driver.state.client.get(KEYS.deploy_active("bg")) is None


def test_failed_pre_promotion_analysis_discards_the_preview_without_a_switch(driver, fakes, var):
    driver.state.set_stable("bg", {"version": "v1", "deploy_id": "old", "provider_deploy_id": "x"})
    fakes.script.smoke_fail = True
    deploy_id = driver.start("bg", new_id(), version="v2")
    drain(driver)
    rec = driver.record(deploy_id)
    assert (rec["status"], rec["phase"], rec["weight"]) == ("rolled_back", "discarded", 0), rec
    assert rec["error"].startswith("gate failed before promotion (preview): smoke[0]: failed (1)")
    assert reloads(var) == 0 and not (var / "upstream.conf").exists()  # traffic never moved
    assert [c["action"] for c in fakes.webhook_calls] == ["deploy"]
    assert driver.state.stable("bg")["version"] == "v1"
    assert not [p for p, _ in driver.sent if p.get("action") == "retire"]


def test_rollback_within_the_scale_down_delay_switches_back_in_one_write(driver, fakes, var, rclient):
    driver.state.set_stable("bg", {"version": "v1", "deploy_id": "old", "provider_deploy_id": "x"})
    deploy_id = driver.start("bg", new_id(), version="v2")
    drain(driver, until=switched(driver, deploy_id))
    assert reloads(var) == 1
    roll_back(driver, rclient, deploy_id)
    rec = driver.record(deploy_id)
    assert (rec["status"], rec["phase"], rec["weight"]) == ("rolled_back", "switched_back", 0), rec
    assert rec["error"] == "rolled back by dana"
    assert reloads(var) == 2  # one write back
    upstream = (var / "upstream.conf").read_text()
    assert f"server {STABLE} weight=100;" in upstream and fakes.url.removeprefix("http://") not in upstream
    drain(driver)  # the retire message comes and does nothing
    assert driver.record(deploy_id)["status"] == "rolled_back"
    assert driver.state.stable("bg")["version"] == "v1"
    assert reloads(var) == 2


def test_redelivered_messages_after_the_switch_write_nothing_again(driver, fakes, var):
    deploy_id = driver.start("bg", new_id(), version="v2")
    drain(driver, until=switched(driver, deploy_id))
    # a worker killed after the switch: its step message is redelivered (twice)
    for _ in range(2):
        driver.rollout.handle(StepPayload.model_validate({"deploy_id": deploy_id, "step": 0}))
    assert reloads(var) == 1
    assert len([p for p, _ in driver.sent if p.get("action") == "retire"]) == 1
    # killed inside the switch (phase written, weight file maybe not): the redelivery writes it once
    driver.state.update(deploy_id, phase="switching", retire_sent=None)
    driver.rollout.handle(StepPayload.model_validate({"deploy_id": deploy_id, "step": 0}))
    assert reloads(var) == 2 and driver.record(deploy_id)["phase"] == "switched"
    drain(driver)
    assert driver.record(deploy_id)["status"] == "succeeded"
    assert len(fakes.webhook_calls) == 1  # the preview was deployed once


def test_confirm_before_promotion_waits_with_the_preview_analysed_and_nothing_switched(
    driver, fakes, var, rclient
):
    deploy_id = driver.start("bgconfirm", new_id(), version="v2")
    drain(driver, until=lambda: driver.record(deploy_id)["status"] == "awaiting_confirmation")
    rec = driver.record(deploy_id)
    assert (rec["phase"], rec["weight"], rec["analysis"]["state"]) == ("analysis", 0, "passed")
    assert reloads(var) == 0
    driver.queue.clear()  # the confirmation timeout, an hour away
    rclient.hset(KEYS.deploy(deploy_id), mapping={"confirmed_step": "0", "status": "in_progress"})
    promote = {"deploy_id": deploy_id, "step": 0, "action": "promote"}
    driver.rollout.handle(StepPayload.model_validate(promote))
    rec = driver.record(deploy_id)
    assert (rec["status"], rec["phase"]) == ("promoting", "switched") and reloads(var) == 1


# -- Vercel: a preview deployment, promoted at the switch; instant rollback to switch back ------------
def test_vercel_preview_is_promoted_and_a_rollback_switches_back_to_the_old_deployment(
    driver, fakes, rclient
):
    first = driver.start("bgweb", new_id(), version="sha1")
    drain(driver)
    assert driver.record(first)["status"] == "succeeded"
    old = driver.record(first)["provider_ids"]["0"]
    second = driver.start("bgweb", new_id(), version="sha2")
    drain(driver, until=switched(driver, second))
    created = fakes.deploy_calls("vercel")
    assert len(created) == 2 and all("target" not in c[2] for c in created)  # previews
    new = driver.record(second)["provider_ids"]["0"]
    promotes = [c[1] for c in fakes.vercel_calls if "/promote/" in c[1]]
    assert promotes == [f"/v10/projects/prj_test/promote/{old}", f"/v10/projects/prj_test/promote/{new}"]
    roll_back(driver, rclient, second)
    rec = driver.record(second)
    assert (rec["status"], rec["phase"]) == ("rolled_back", "switched_back"), rec
    rollbacks = [c[1] for c in fakes.vercel_calls if "/rollback/" in c[1]]
    assert rollbacks == [f"/v9/projects/prj_test/rollback/{old}"]
    assert driver.state.stable("bgweb")["provider_deploy_id"] == old


def test_vercel_status_gives_the_preview_address(driver, fakes):
    deploy_id = driver.start("bgweb", new_id(), version="sha1")
    drain(driver, until=switched(driver, deploy_id))
    from worker.deploy.providers import StepContext
    from worker.deploy.vercel import VercelProvider

    provider = VercelProvider(driver.settings.services.services["bgweb"].vercel, driver.settings)
    pid = driver.record(deploy_id)["provider_ids"]["0"]
    assert provider.status(StepContext(deploy_id, "bgweb", "sha1", 0, 0), pid).url == "https://x.vercel.app"
    assert driver.record(deploy_id)["preview_url"] == fakes.url  # the configured one wins


# -- the services file and the API ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("    provider: render\n    render: {service_id: srv-1}\n    strategy: blue_green\n",
         "service 'x': router.type: strategy blue_green needs router: nginx with provider render: "
         "Render has no preview deployment beside the live one of a service"),
        ("    provider: vercel\n    vercel: {project_id: p}\n    strategy: blue_green\n",
         "service 'x': vercel.promote: strategy blue_green deploys a Vercel preview and promotes it"),
        ("    provider: webhook\n    webhook: {url: 'http://h/x', secret_env: S}\n    strategy: blue_green\n",
         "service 'x': router.type: strategy blue_green needs router: nginx with provider webhook"),
        ("    provider: webhook\n    webhook: {url: 'http://h/x', secret_env: S}\n    strategy: canary\n"
         "    gates: {smoke_urls: ['{preview_url}/health']}\n",
         "service 'x': gates.smoke_urls: {preview_url} needs strategy blue_green or router: nginx"),
        ("    provider: vercel\n    vercel: {project_id: p, promote: true}\n    strategy: blue_green\n"
         "    blue_green: {scale_down_delay_seconds: -1}\n",
         "service 'x': blue_green.scale_down_delay_seconds: Input should be greater than or equal to 0"),
        ("    provider: vercel\n    vercel: {project_id: p, promote: true}\n    strategy: blue-green\n",
         "service 'x': strategy: Input should be 'direct', 'canary' or 'blue_green'"),
    ],
)  # fmt: skip
def test_services_file_validation_names_the_field(tmp_path, service, expected):
    path = tmp_path / "s.yaml"
    path.write_text("services:\n  x:\n" + service)
    with pytest.raises(ConfigError) as info:
        load_services(path)
    assert expected in str(info.value)


def test_old_files_are_unchanged_and_defaults(services_file):
    services = load_services(services_file).services
    assert services["api"].strategy == "canary" and services["test"].strategy == "direct"
    assert services["test"].blue_green.scale_down_delay_seconds == 30
    assert services["test"].blue_green.pre_promotion_seconds == 0


def test_a_blue_green_deploy_of_a_service_that_cannot_have_one_is_refused(dsettings):
    with pytest.raises(ValidationError) as info:
        DeployPayload.model_validate({"service": "site", "strategy": "blue_green"}, context=dsettings)
    assert "router.type: strategy blue_green needs router: nginx with provider render" in str(info.value)
    ok = DeployPayload.model_validate({"service": "web", "strategy": "canary"}, context=dsettings)
    assert ok.strategy == "canary"


@pytest.fixture
async def dapi(aiohttp_client, dsettings):
    from coordinator.app import create_app

    return await aiohttp_client(create_app(dsettings))


async def test_api_refuses_blue_green_for_render_naming_the_field(dapi, auth):
    resp = await dapi.post(
        "/api/v1/deploys", json={"service": "site", "strategy": "blue_green"}, headers=auth("deploy")
    )
    assert resp.status == 422
    body = await resp.json()
    assert body["error"]["fields"][0]["loc"] == ["body", "strategy"], body
    assert "router.type" in body["error"]["fields"][0]["msg"]
    ok = await dapi.post("/api/v1/deploys", json={"service": "bg"}, headers=auth("deploy"))
    assert ok.status == 202


def test_notifications_tell_started_switched_and_succeeded(driver, dsettings, rclient, fakes, monkeypatch):
    from worker.deploy.notify import Notifier, summary

    monkeypatch.setenv("TEAM_SLACK_URL", "http://127.0.0.1:9/slack")  # collected, not delivered
    settings = dsettings.model_copy(update={"deploy_notify_webhook_env": "TEAM_SLACK_URL"})
    sent: list[dict[str, object]] = []
    driver.rollout.on_transition = Notifier(rclient, settings, lambda p, d: sent.append(p)).transition
    deploy_id = driver.start("bg", new_id(), version="v2")
    drain(driver)
    assert driver.record(deploy_id)["status"] == "succeeded"
    assert [m["event"] for m in sent] == ["started", "switched:0", "succeeded"]
    rec = driver.record(deploy_id)
    assert summary(rec, "started") == "bg v2: blue-green deploy started (a preview beside the stable version)"
    assert summary(rec, "switched:0") == (
        "bg v2: all traffic switched to the new version; the old one is kept 0.3s for an instant rollback"
    )


def test_cli_progress_line_shows_the_phase():
    from shared.devtools.deploy_client import progress

    rec = {"service": "bg", "version": "v2", "status": "promoting", "steps": [100], "step": 0,
           "gates": [{"ok": True}], "weight": 100, "phase": "switched"}  # fmt: skip
    assert progress(rec) == "bg v2  promoting   [x]100%  weight 100%  phase switched"


def test_a_preview_created_by_a_killed_worker_is_adopted_not_created_again(driver, fakes):
    """A worker died after Vercel accepted the preview's creation and before it recorded the id
    (the call marker is still ``pending:``): the redelivered step finds it by its meta values."""
    from worker.deploy.state import now_ms

    deploy_id = driver.start("bgweb", new_id(), version="sha9")
    driver.state.client.set(KEYS.deploy_call(deploy_id, 0), f"pending:{now_ms()}")
    fakes.vercel_deployments["dpl_dead"] = {
        "id": "dpl_dead", "readyState": "READY", "url": "x.vercel.app", "_polls": 0, "target": None,
        "meta": {"opsdeck_deploy_id": deploy_id, "opsdeck_step": "0", "githubCommitSha": "sha9"},
        "projectId": "prj_test", "name": "prj_test", "createdAt": now_ms(), "teamId": "team_test",
    }  # fmt: skip
    drain(driver)
    rec = driver.record(deploy_id)
    assert (rec["status"], rec["phase"]) == ("succeeded", "retired"), rec
    assert rec["provider_ids"] == {"0": "dpl_dead"} and fakes.deploy_calls("vercel") == []
    assert [c[1] for c in fakes.vercel_calls if "/promote/" in c[1]] == [
        "/v10/projects/prj_test/promote/dpl_dead"
    ]


def test_a_canary_of_a_blue_green_service_measures_the_new_versions_address(driver, fakes):
    """``strategy: canary`` asked for a blue-green service: {preview_url} is still the new version's."""
    deploy_id = driver.start("bgweb", new_id(), version="sha3", strategy="canary")
    drain(driver)
    rec = driver.record(deploy_id)
    assert (rec["status"], rec["strategy"], rec.get("phase")) == ("succeeded", "canary", None), rec
    assert rec["preview_url"] == fakes.url
    assert {r["url"] for g in rec["gates"] for r in g["results"]} == {f"{fakes.url}/health"}


def test_vercel_failed_pre_promotion_analysis_promotes_nothing_and_rolls_nothing_back(driver, fakes):
    first = driver.start("bgweb", new_id(), version="sha1")
    drain(driver)
    calls = len(fakes.vercel_calls)
    fakes.script.smoke_fail = True
    second = driver.start("bgweb", new_id(), version="sha2")
    drain(driver)
    rec = driver.record(second)
    assert (rec["status"], rec["phase"]) == ("rolled_back", "discarded"), rec
    later = [c[1] for c in fakes.vercel_calls[calls:]]
    assert not [p for p in later if "/promote/" in p or "/rollback/" in p], later  # production untouched
    assert driver.state.stable("bgweb")["deploy_id"] == first


def test_abort_during_the_scale_down_delay_switches_back_and_cancels(driver, fakes, var, rclient):
    deploy_id = driver.start("bg", new_id(), version="v2")
    drain(driver, until=switched(driver, deploy_id))
    rclient.hset(KEYS.deploy(deploy_id), mapping={"requested": "abort", "last_action_by": "fay"})
    driver.rollout.handle(StepPayload.model_validate({"deploy_id": deploy_id, "action": "abort"}))
    rec = driver.record(deploy_id)
    assert (rec["status"], rec["phase"], rec["error"]) == ("canceled", "switched_back", "aborted by fay")
    assert reloads(var) == 2


def test_an_unconfirmed_switch_times_out_and_discards_the_preview(driver, fakes, var):
    deploy_id = driver.start("bgconfirm", new_id(), version="v2")
    drain(driver, until=lambda: driver.record(deploy_id)["status"] == "awaiting_confirmation")
    [timeout] = [p for p, _ in driver.queue if p.get("action") == "timeout"]
    driver.queue.clear()
    driver.state.update(deploy_id, confirm_deadline=0)  # the hour is up
    driver.rollout.handle(StepPayload.model_validate(timeout))
    rec = driver.record(deploy_id)
    assert (rec["status"], rec["phase"]) == ("canceled", "discarded"), rec
    assert rec["error"] == "not confirmed within 3600s (confirm: before_promotion): aborted before promotion"
    assert reloads(var) == 0
