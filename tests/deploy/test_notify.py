"""Deploy notifications (worker/deploy/notify.py) against a real receiver on 127.0.0.1: one Slack
message (``{"text", "blocks"}``) and one generic signed event per stage change, rollback and pause,
each linking the deploy's dashboard page; exactly one per event whatever is sent again or retried;
and, through a real worker agent, a receiver that hangs does not hold the rollout."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid

import pytest

from shared.keys import Keys
from tests.deploy.receiver import ReceiverServer
from tests.helpers import read_log, wait_for
from tests.worker.test_end_to_end import start_agent, wait_running
from worker.deploy.notify import Notifier, NotifyFailed, event_for

KEYS = Keys()
DASHBOARD = "https://dash.example.test"
NOTIFY_SECRET = "notify-test-secret"


@pytest.fixture
def receiver():
    server = ReceiverServer()
    yield server.start()
    server.stop()


@pytest.fixture
def notify_env(monkeypatch, receiver):
    env = {"TEAM_SLACK_URL": f"{receiver.url}/slack", "TEAM_HOOK_URL": f"{receiver.url}/generic",
           "TEAM_HOOK_SECRET": NOTIFY_SECRET}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return {"DEPLOY_NOTIFY_WEBHOOK_ENV": "TEAM_SLACK_URL", "DEPLOY_NOTIFY_GENERIC_ENV": "TEAM_HOOK_URL",
            "DEPLOY_NOTIFY_SECRET_ENV": "TEAM_HOOK_SECRET", "DASHBOARD_URL": DASHBOARD, **env}  # fmt: skip


@pytest.fixture
def outbox(driver, dsettings, rclient, notify_env):
    """The driver's rollout with a Notifier hooked in; its messages collected, not delivered."""
    settings = dsettings.model_copy(update={
        "deploy_notify_webhook_env": "TEAM_SLACK_URL", "deploy_notify_generic_env": "TEAM_HOOK_URL",
        "deploy_notify_secret_env": "TEAM_HOOK_SECRET", "dashboard_url": DASHBOARD,
    })  # fmt: skip
    sent: list[dict[str, object]] = []
    notifier = Notifier(rclient, settings, lambda payload, delay: sent.append(payload))
    driver.rollout.on_transition = notifier.transition
    return notifier, sent


def deliver_all(notifier, sent):
    """Deliver every collected message once, each with its own message id (as Dramatiq would)."""
    return [notifier.deliver(m["deploy_id"], m["event"], str(uuid.uuid4())) for m in sent]


def test_events_are_the_stages_and_any_new_status():
    assert event_for("in_progress", 0) == "started"
    assert event_for("in_progress", 2) is None and event_for("promoting", 3) is None
    assert event_for("canary", 2) == "canary:2"
    assert event_for("paused", 1) == "paused:1" and event_for("rolled_back", 3) == "rolled_back"
    assert event_for("analysis_hold", 2) == "analysis_hold:2"  # a status added later notifies too


def test_canary_sends_one_message_per_stage_with_the_dashboard_link(driver, outbox, receiver, fakes):
    notifier, sent = outbox
    deploy_id = driver.start("api", str(uuid.uuid4()), version="v2")
    driver.run()
    assert driver.record(deploy_id)["status"] == "succeeded"
    events = ["started", "canary:1", "canary:2", "canary:3", "succeeded"]
    assert [m["event"] for m in sent] == events
    assert deliver_all(notifier, sent) == ["sent"] * 5
    slack = receiver.bodies("/slack")
    assert len(slack) == 5
    link = f"{DASHBOARD}/deploys/{deploy_id}"
    for body in slack:
        assert set(body) == {"text", "blocks"} and link in body["text"]
        assert body["blocks"][0]["type"] == "section" and body["blocks"][0]["text"]["type"] == "mrkdwn"
        assert link in body["blocks"][1]["elements"][0]["text"]
    assert slack[0]["text"].startswith("api v2: deploy started (1% → 5% → 25% → 100%)")
    assert "5% passed its gates, going on to 25%" in slack[2]["text"]
    assert "live at 100%, now the stable version" in slack[4]["text"]
    generic = [r for r in receiver.accepted if r.path == "/generic"]
    assert [r.body["event"] for r in generic] == events
    for r in generic:
        signature = "sha256=" + hmac.new(NOTIFY_SECRET.encode(), r.raw, hashlib.sha256).hexdigest()
        assert r.headers["X-Opsdeck-Signature"] == signature
        assert r.headers["Idempotency-Key"] == f"{deploy_id}:{r.body['event']}"
        assert r.body["url"] == link and r.body["service"] == "api" and r.body["version"] == "v2"


def test_a_rollback_says_why(driver, outbox, receiver, fakes):
    notifier, sent = outbox
    fakes.script.smoke_fail_at_weight = 25
    deploy_id = driver.start("api", str(uuid.uuid4()), version="v3")
    driver.run()
    assert driver.record(deploy_id)["status"] == "rolled_back"
    assert [m["event"] for m in sent] == ["started", "canary:1", "canary:2", "rolled_back"]
    deliver_all(notifier, sent)
    last = receiver.bodies("/slack")[-1]["text"]
    assert last.startswith("api v3: rolled back: gate failed at step 2 (25%)")


def test_a_pause_is_news_with_its_reason_whatever_the_status(driver, outbox, receiver):
    """The hook is generic: an inconclusive pause (the analysis runs) or any other new status
    notifies with the reason the record holds."""
    notifier, sent = outbox
    deploy_id = driver.start("api", str(uuid.uuid4()), version="v4")
    rec = driver.record(deploy_id)
    driver.rollout._transition(rec, "paused", step=1, paused_reason="error_rate: inconclusive (2) > 0")
    driver.rollout._transition(rec, "analysis_hold", step=2)
    assert [m["event"] for m in sent] == ["paused:1", "analysis_hold:2"]
    deliver_all(notifier, sent)
    texts = [b["text"] for b in receiver.bodies("/slack")]
    assert texts[0].startswith("api v4: paused at step 1 (5%): error_rate: inconclusive (2) > 0")
    assert texts[1].startswith("api v4: analysis hold at step 2 (25%)")


def test_exactly_one_message_per_event_after_redelivery_and_retries(driver, outbox, receiver, rclient):
    notifier, sent = outbox
    deploy_id = driver.start("api", str(uuid.uuid4()), version="v5")
    rec = driver.record(deploy_id)
    driver.rollout._transition(rec, "canary", step=1)
    notifier._last.clear()  # the step ran again after a redelivery, in another process
    driver.rollout._transition(rec, "canary", step=1)
    assert [m["event"] for m in sent] == ["canary:1", "canary:1"]
    receiver.fail = 1  # the first attempt's first channel (Slack) answers 500
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    with pytest.raises(NotifyFailed, match="Slack notify answered 500") as failed:
        notifier.deliver(deploy_id, "canary:1", first)
    assert "/slack" not in str(failed.value) and receiver.url not in str(failed.value)  # the URL is a secret
    assert notifier.deliver(deploy_id, "canary:1", second) == "duplicate"  # the other message: nothing
    assert notifier.deliver(deploy_id, "canary:1", first) == "sent"  # the retry: Slack only
    assert notifier.deliver(deploy_id, "canary:1", first) == "sent"  # redelivered after it was sent
    assert [r.path for r in receiver.accepted] == ["/generic", "/slack"]
    notifier._last.clear()
    driver.rollout._transition(rec, "canary", step=1)  # once told, the hook sends nothing
    assert len(sent) == 2


def test_without_channels_nothing_is_sent(driver, rclient, dsettings):
    sent: list[dict[str, object]] = []
    driver.rollout.on_transition = Notifier(rclient, dsettings, lambda p, d: sent.append(p)).transition
    deploy_id = driver.start("test", str(uuid.uuid4()), version="v1")
    driver.run()
    assert driver.record(deploy_id)["status"] == "succeeded" and sent == []


def test_a_failing_hook_never_stops_the_rollout(driver, outbox, rclient):
    notifier, _ = outbox

    def broken(payload, delay):
        raise ConnectionError("broker down")

    notifier.send = broken
    deploy_id = driver.start("test", str(uuid.uuid4()), version="v1")
    driver.run()
    assert driver.record(deploy_id)["status"] == "succeeded"


@pytest.fixture
async def dapi(aiohttp_client, dsettings):
    from coordinator.app import create_app

    return await aiohttp_client(create_app(dsettings))


@pytest.mark.slow
async def test_a_hanging_receiver_does_not_hold_the_rollout(
    procs, env_factory, tmp_path, rclient, fakes, deploy_env, receiver, notify_env, dapi, auth
):
    """Through a real worker agent: every notification hangs at the receiver, yet the canary
    reaches succeeded with none answered; once the receiver answers, every event is delivered."""
    from tests.deploy.test_worker_e2e import agent_env

    receiver.hang = True
    _, log = start_agent(
        procs, env_factory, tmp_path, **agent_env(fakes, tmp_path, deploy_env, 0), **notify_env
    )
    wait_running(rclient, "agent")
    resp = await dapi.post(
        "/api/v1/deploys", json={"service": "api", "version": "v6"}, headers=auth("deploy")
    )
    deploy_id = (await resp.json())["id"]
    ended = (b"succeeded", b"failed", b"rolled_back")
    await asyncio.to_thread(wait_for, lambda: rclient.hget(KEYS.deploy(deploy_id), "status") in ended,
                            timeout=60, what="the rollout to end")  # fmt: skip
    assert rclient.hget(KEYS.deploy(deploy_id), "status") == b"succeeded", read_log(log)
    assert receiver.held >= 1 and receiver.answered == 0, read_log(log)  # it ended while they hung
    receiver.hang = False
    receiver.release.set()
    events = ["started", "canary:1", "canary:2", "canary:3", "succeeded"]
    key = KEYS.deploy_notified(deploy_id)
    await asyncio.to_thread(wait_for, lambda: all(rclient.hget(key, f"{e}|done") for e in events),
                            timeout=120, what="every event delivered")  # fmt: skip
    assert {r.body["event"] for r in receiver.accepted if r.path == "/generic"} == set(events)
    assert {r.body["text"].split(":")[0] for r in receiver.accepted if r.path == "/slack"} == {"api v6"}
