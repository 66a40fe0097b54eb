"""The rollout state machine in-process against the fake providers (real Redis)."""

from __future__ import annotations

import uuid

from shared.keys import Keys

KEYS = Keys()


def new_id() -> str:
    return str(uuid.uuid4())


def test_direct_render_deploy_succeeds_and_becomes_stable(driver, fakes):
    deploy_id = driver.start("site", new_id(), version="abc123")
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert rec["steps"] == [100] and rec["weight"] == 100
    assert len(fakes.deploy_calls("render")) == 1
    assert fakes.deploy_calls("render")[0][2] == {"clearCache": "do_not_clear", "commitId": "abc123"}
    gates = rec["gates"][0]
    assert gates["ok"] and {r["gate"] for r in gates["results"]} == {"smoke", "error_rate", "p99_seconds"}
    stable = driver.state.stable("site")
    assert stable["version"] == "abc123" and stable["deploy_id"] == deploy_id
    assert stable["provider_deploy_id"] == rec["provider_ids"]["0"]
    assert driver.state.client.get(KEYS.deploy_active("site")) is None


def test_canary_walks_weights_1_5_25_100_with_one_webhook_call_per_step(driver, fakes):
    deploy_id = driver.start("api", new_id(), version="v2")
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert [c["weight"] for c in fakes.webhook_calls] == [1, 5, 25, 100]
    assert [c["step"] for c in fakes.webhook_calls] == [0, 1, 2, 3]
    assert all(c["version"] == "v2" and c["deploy_id"] == deploy_id for c in fakes.webhook_calls)
    assert [g["weight"] for g in rec["gates"]] == [1, 5, 25, 100]
    assert driver.state.stable("api")["version"] == "v2"
    # the next step was sent delayed by the pause
    assert [d for p, d in driver.sent if p.get("step", 0) > 0] == [0.0, 0.0, 0.0]


def test_gate_failure_at_step_2_rolls_back_and_keeps_stable(driver, fakes):
    driver.state.set_stable("api", {"version": "v1", "deploy_id": "old", "provider_deploy_id": "x"})
    fakes.script.smoke_fail_at_weight = 25
    deploy_id = driver.start("api", new_id(), version="v2")
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "rolled_back", rec
    assert "gate failed at step 2 (25%)" in rec["error"]
    assert [g["ok"] for g in rec["gates"]] == [True, True, False]
    assert fakes.webhook_calls[-1] | {"deploy_id": None} == {
        "deploy_id": None,
        "service": "api",
        "version": "v1",
        "step": 2,
        "weight": 0,
        "action": "rollback",
    }
    assert driver.state.stable("api")["version"] == "v1"


def test_render_build_failure_is_failed_without_rollback(driver, fakes):
    driver.state.set_stable("site", {"version": "v1", "deploy_id": "old", "provider_deploy_id": "dep-old"})
    fakes.script.fail_build = True
    deploy_id = driver.start("site", new_id(), version="bad")
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "failed"
    assert "build_failed" in rec["error"]
    assert not [c for c in fakes.render_calls if c[1].endswith("/rollback")]
    assert driver.state.stable("site")["version"] == "v1"


def test_render_gate_failure_rolls_back_to_the_stable_deploy_id(driver, fakes):
    first = driver.start("site", new_id(), version="v1")
    driver.run()
    stable_pid = driver.record(first)["provider_ids"]["0"]
    fakes.script.error_rate = 0.5
    second = driver.start("site", new_id(), version="v2")
    driver.run()
    rec = driver.record(second)
    assert rec["status"] == "rolled_back", rec
    assert "error_rate" in rec["error"]
    rollbacks = [c for c in fakes.render_calls if c[1].endswith("/rollback")]
    assert [c[2] for c in rollbacks] == [{"deployId": stable_pid}]
    assert driver.state.stable("site")["version"] == "v1"


def test_vercel_canary_and_failure(driver, fakes):
    ok = driver.start("web", new_id(), version="sha1")
    driver.run()
    assert driver.record(ok)["status"] == "succeeded"
    created = fakes.deploy_calls("vercel")
    assert len(created) == 1
    assert created[0][2]["gitSource"] == {"type": "github", "repoId": "1", "ref": "main", "sha": "sha1"}
    assert created[0][2]["target"] == "production"
    assert next(iter(fakes.vercel_deployments.values()))["teamId"] == "team_test"
    fakes.script.fail_build = True
    bad = driver.start("web", new_id(), version="sha2")
    driver.run()
    rec = driver.record(bad)
    assert rec["status"] == "failed" and "npm run build" in rec["error"]


def test_429_with_retry_after_is_retried_and_auth_errors_fail_at_once(driver, fakes):
    fakes.script.throttle = 2
    ok = driver.start("site", new_id())
    driver.run()
    assert driver.record(ok)["status"] == "succeeded"
    assert len(fakes.deploy_calls("render")) == 3  # two 429s, then accepted
    fakes.script.reject_auth = True
    before = len(fakes.render_calls)
    bad = driver.start("site", new_id())
    driver.run()
    rec = driver.record(bad)
    assert rec["status"] == "failed"
    assert rec["error"] == "Render answered 401: invalid API key"
    assert len(fakes.render_calls) == before + 1


def test_redelivered_step_polls_instead_of_triggering_again(driver, fakes):
    deploy_id = driver.start("site", new_id())
    payload, _ = driver.queue.popleft()
    # A worker called the provider, recorded it, and died before finishing the step.
    driver.state.call_once(deploy_id, 0, lambda: "dep-from-dead-worker")
    fakes.render_deploys["dep-from-dead-worker"] = {
        "id": "dep-from-dead-worker",
        "status": "live",
        "_polls": 0,
        "commit": {"id": "c"},
    }
    driver.queue.append((payload, 0))
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded"
    assert fakes.deploy_calls("render") == []
    assert rec["provider_ids"] == {"0": "dep-from-dead-worker"}


def test_abort_mid_canary_returns_traffic_and_cancels(driver, fakes, rclient):
    deploy_id = driver.start("api", new_id(), version="v2")
    driver.run(until=lambda: len(fakes.webhook_calls) == 2)
    rclient.hset(KEYS.deploy(deploy_id), mapping={"requested": "abort", "last_action_by": "alice"})
    driver.queue.append(({"deploy_id": deploy_id, "action": "abort"}, 0))
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "canceled"
    assert rec["error"] == "aborted by alice"
    assert fakes.webhook_calls[-1]["action"] == "rollback"
    assert len([c for c in fakes.webhook_calls if c["action"] == "deploy"]) == 2


def test_manual_rollback_of_a_success_restores_the_previous_stable(driver, fakes, rclient):
    first = driver.start("site", new_id(), version="v1")
    driver.run()
    second = driver.start("site", new_id(), version="v2")
    driver.run()
    assert driver.state.stable("site")["version"] == "v2"
    rclient.hset(KEYS.deploy(second), mapping={"requested": "rollback", "last_action_by": "bob"})
    driver.queue.append(({"deploy_id": second, "action": "rollback"}, 0))
    driver.run()
    rec = driver.record(second)
    assert rec["status"] == "rolled_back" and rec["error"] == "rolled back by bob"
    assert driver.state.stable("site")["deploy_id"] == first
    assert [c[2] for c in fakes.render_calls if c[1].endswith("/rollback")] == [
        {"deployId": driver.record(first)["provider_ids"]["0"]}
    ]


def test_second_deploy_of_a_service_waits_behind_the_first(driver, fakes):
    first = driver.start("api", new_id())
    driver.run(until=lambda: len(fakes.webhook_calls) == 1)
    second = driver.start("api", new_id())
    driver.run(until=lambda: driver.record(second).get("waiting_for") == first)
    assert driver.record(second)["status"] == "queued"
    driver.run()
    assert driver.record(first)["status"] == "succeeded"
    assert driver.record(second)["status"] == "succeeded"
    assert [c["deploy_id"] for c in fakes.webhook_calls] == [first] * 4 + [second] * 4


def test_provider_timeout_is_transient_then_fails(dsettings, rclient, fakes):
    from tests.deploy.conftest import Driver

    quick = dsettings.model_copy(update={"deploy_http_retries": 0, "deploy_http_timeout": 0.3})
    driver = Driver(quick, rclient)
    fakes.script.hang_seconds = 0.6  # longer than the HTTP timeout
    deploy_id = driver.start("site", new_id())
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "failed"
    assert "timed out" in rec["error"]
