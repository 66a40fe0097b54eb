"""A step whose provider call was interrupted (call marker ``pending``: a worker killed after the
provider accepted the call, before the answer was recorded) adopts the deployment the provider
has instead of starting another, per provider, against the fake servers (real Redis, real HTTP)."""

from __future__ import annotations

import time
import uuid

import pytest

from shared.keys import Keys
from tests.deploy.conftest import services_yaml
from worker.deploy.providers import StepContext, make_provider
from worker.deploy.state import now_ms

KEYS = Keys()
IMAGE_SERVICE = """
  img:
    provider: render
    render: {service_id: srv-img, api_key_env: RENDER_API_KEY, version_kind: image}
"""


@pytest.fixture
def services_file(tmp_path, fakes):
    """The usual services and a Render one deploying images (overrides the conftest's)."""
    path = tmp_path / "services.yaml"
    path.write_text(services_yaml(fakes.url, extra=IMAGE_SERVICE))
    return path


def interrupted(driver, service: str, version: str | None, weight: int) -> tuple[str, str]:
    """Start a deploy and play the dead worker of its step 0: marker pending, provider called,
    answer lost. Returns the deploy id and the provider's id of what the lost call started."""
    deploy_id = driver.start(service, str(uuid.uuid4()), version=version)
    payload, _ = driver.queue.popleft()
    driver.state.client.set(KEYS.deploy_call(deploy_id, 0), f"pending:{now_ms()}")
    provider = make_provider(driver.settings.services.services[service], driver.settings)
    lost = provider.trigger(StepContext(deploy_id, service, version, 0, weight))
    driver.queue.append((payload, 0))
    return deploy_id, lost


def test_render_deploy_of_the_commit_since_the_marker_is_adopted(driver, fakes):
    deploy_id, lost = interrupted(driver, "site", "abc123", 100)
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert len(fakes.deploy_calls("render")) == 1  # the lost call's, none after it
    assert rec["provider_ids"] == {"0": lost}
    lookups = [c[1] for c in fakes.render_calls if c[0] == "GET" and "createdAfter=" in c[1]]
    assert len(lookups) == 1 and lookups[0].startswith("/v1/services/srv-test/deploys?")
    assert driver.state.call_done(deploy_id, 0) == lost


def test_render_image_deploy_is_adopted_by_its_image_ref(driver, fakes):
    image = "registry.example/app:1.4"
    deploy_id, lost = interrupted(driver, "img", image, 100)
    assert fakes.render_deploys[lost]["image"]["ref"] == image
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert [c[2] for c in fakes.deploy_calls("render")] == [{"clearCache": "do_not_clear", "imageUrl": image}]
    assert rec["provider_ids"] == {"0": lost}


def test_render_without_a_matching_deploy_triggers_again(driver, fakes):
    """Deploys of another commit, or of this one created long before the marker, are not ours."""
    deploy_id = driver.start("site", str(uuid.uuid4()), version="abc123")
    payload, _ = driver.queue.popleft()
    driver.state.client.set(KEYS.deploy_call(deploy_id, 0), f"pending:{now_ms()}")
    for pid, commit, created in (
        ("dep-old", "abc123", time.time() - 3600),
        ("dep-other", "zzz999", time.time()),
    ):
        fakes.render_deploys[pid] = {"id": pid, "status": "live", "trigger": "api", "_polls": 0,
                                     "commit": {"id": commit}, "_created": created}  # fmt: skip
    driver.queue.append((payload, 0))
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert len(fakes.deploy_calls("render")) == 1
    assert rec["provider_ids"]["0"] not in ("dep-old", "dep-other")


def test_vercel_deployment_with_the_deploy_id_meta_is_adopted(driver, fakes):
    deploy_id, lost = interrupted(driver, "web", "sha1", 10)
    assert fakes.deploy_calls("vercel")[0][2]["meta"] == {"opsdeck_deploy_id": deploy_id, "opsdeck_step": "0"}
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert len(fakes.deploy_calls("vercel")) == 1
    assert rec["provider_ids"] == {"0": lost}
    [lookup] = [c[1] for c in fakes.vercel_calls if c[1].startswith("/v6/deployments")]
    assert f"meta-opsdeck_deploy_id={deploy_id}" in lookup and "projectId=prj_test" in lookup


def test_vercel_without_a_deployment_of_this_deploy_creates_one(driver, fakes):
    other, _ = interrupted(driver, "web", "sha1", 10)  # a deployment of another deploy exists
    driver.queue.clear()
    driver.state.update(other, status="canceled")
    driver.state.release("web", other)
    deploy_id = driver.start("web", str(uuid.uuid4()), version="sha2")
    payload, _ = driver.queue.popleft()
    driver.state.client.set(KEYS.deploy_call(deploy_id, 0), f"pending:{now_ms()}")
    driver.queue.append((payload, 0))
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert len(fakes.deploy_calls("vercel")) == 2
    assert fakes.vercel_deployments[rec["provider_ids"]["0"]]["meta"]["opsdeck_deploy_id"] == deploy_id


def test_webhook_step_is_posted_again_with_the_same_idempotency_key(driver, fakes):
    deploy_id, _ = interrupted(driver, "api", "v2", 1)
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert fakes.webhook_duplicates == 1  # the repeat of step 0, dropped by the receiver
    assert [(c["step"], c["weight"]) for c in fakes.webhook_calls] == [(0, 1), (1, 5), (2, 25), (3, 100)]
    assert f"{deploy_id}:0:deploy" in fakes.webhook_keys
