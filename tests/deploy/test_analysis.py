"""Analysis runs (issue 20, part 1): every gate sampled over each step's pause, judged by its
conditions and limits; a failure beyond its limit rolls back, an inconclusive run pauses for an
operator (promote goes on, abort rolls back). Real Redis, the fake providers and a fake
Prometheus (real HTTP on 127.0.0.1); the rollout in-process (Driver: delays are not waited, so
intervals are fractions of a second and no test depends on the clock)."""

from __future__ import annotations

import asyncio
import io
import json
import uuid

import pytest

from shared.deploy.conditions import Condition
from shared.deploy.config import load_services
from shared.deploy.models import StepPayload
from shared.errors import ConfigError
from shared.keys import Keys
from tests.deploy.conftest import services_yaml
from tests.deploy.test_confirm import queued_step_messages
from worker.deploy.analysis import plan

KEYS = Keys()


def analysed_yaml(url: str) -> str:
    hook = f'{{url: "{url}/hook", secret_env: DEPLOY_WEBHOOK_SECRET}}'
    metrics = f'query_url: "{url}/api/v1/query"'
    error_rate = "query: 'error_rate{service=\"{service}\"}'"
    canary = "strategy: canary\n    canary: {steps: [10, 50, 100], pause_seconds: 0.4}"
    return f"""
  watched:
    provider: webhook
    webhook: {hook}
    {canary}
    gates:
      smoke_urls: ["{url}/health"]
      interval_seconds: 0.1
      metrics: {{{metrics}, error_rate: {{{error_rate}, max: 0.05}}}}
  tolerant:
    provider: webhook
    webhook: {hook}
    {canary}
    gates:
      interval_seconds: 0.1
      metrics: {{{metrics}, error_rate: {{{error_rate}, failure: "result > 0.05", failure_limit: 1}}}}
  judged:
    provider: webhook
    webhook: {hook}
    {canary}
    gates:
      interval_seconds: 0.1
      inconclusive_limit: 2
      metrics:
        {metrics}
        queries:
          latency: {{query: "latency", success: "result < 0.01", failure: "result > 0.1"}}
  ungated:
    provider: webhook
    webhook: {hook}
    {canary}
  flaky:
    provider: webhook
    webhook: {hook}
    {canary}
    gates:
      interval_seconds: 0.1
      count: 3
      consecutive_error_limit: 1
      metrics: {{{metrics}, error_rate: {{{error_rate}, max: 0.05}}}}
"""


@pytest.fixture
def services_file(tmp_path, fakes):
    """The usual services plus analysed ones (overrides tests/deploy/conftest.py's)."""
    path = tmp_path / "services.yaml"
    path.write_text(services_yaml(fakes.url, extra=analysed_yaml(fakes.url)))
    return path


@pytest.fixture
async def dapi(aiohttp_client, dsettings):
    from coordinator.app import create_app

    return await aiohttp_client(create_app(dsettings))


def new_id() -> str:
    return str(uuid.uuid4())


def verdicts(rec, metric="error_rate", step=None):
    return [m["verdict"] for m in rec["measurements"] if m["metric"] == metric and step in (None, m["step"])]


def analyze_messages(driver):
    return [p for p, _ in driver.sent if p.get("action") == "analyze"]


# -- the services file ------------------------------------------------------------------------------
def test_an_old_services_file_gets_the_defaults(services_file):
    gates = load_services(services_file).services["api"].gates  # sets none of the new fields
    assert (gates.interval_seconds, gates.count) == (5.0, None)
    assert (gates.failure_limit, gates.inconclusive_limit, gates.consecutive_error_limit) == (0, 0, 4)
    assert plan(gates, 60, last=False) == (13, 5.0)  # 0, 5, ..., 60 s: the whole pause
    assert plan(gates, 2, last=False) == (2, 2.0)  # a pause shorter than the interval: its start and end
    assert plan(gates, 0, last=False) == (1, 0.0)
    assert plan(gates, 60, last=True) == (1, 0.0)  # once after the last step
    flaky = load_services(services_file).services["flaky"].gates
    assert plan(flaky, 0.4, last=False) == (3, 0.1)  # count bounds the run
    old = load_services(services_file).services["site"].gates.metrics
    assert old is not None and old.error_rate is not None
    assert old.error_rate.max == 0.05 and old.error_rate.success is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("max: 0.05}}", "success: \"__import__('os').system('true')\"}}",
         "service 'watched': gates.metrics.error_rate.success: must be a comparison"),
        ("max: 0.05}}", 'success: "result.real < 1"}}',
         "service 'watched': gates.metrics.error_rate.success: Attribute is not allowed"),
        ("max: 0.05}}", 'failure: "x > 1"}}',
         "service 'watched': gates.metrics.error_rate.failure: unknown name 'x' (only 'result' is allowed)"),
        ("max: 0.05}}", "success: \"result < 'a'\"}}",
         "service 'watched': gates.metrics.error_rate.success: only numbers are allowed as constants"),
        ("max: 0.05}}", 'success: "result +"}}',
         "service 'watched': gates.metrics.error_rate.success: not a valid expression"),
        ("max: 0.05}}", 'success: "result < 1", max: 1}}',
         "service 'watched': gates.metrics.error_rate: set max or success, not both"),
        (", max: 0.05}}", "}}", "service 'watched': gates.metrics.error_rate: needs max, success or failure"),
        ("interval_seconds: 0.1", "interval_seconds: 0",
         "service 'watched': gates.interval_seconds: Input should be greater than 0"),
        ("inconclusive_limit: 2", "inconclusive_limit: -1",
         "service 'judged': gates.inconclusive_limit: Input should be greater than or equal to 0"),
        ("latency: {", "Latency: {",
         "service 'judged': gates.metrics.queries: metric name 'Latency' must match"),
    ],
)  # fmt: skip
def test_bad_conditions_and_limits_stop_the_file_naming_the_field(
    tmp_path, services_file, old, new, expected
):
    bad = tmp_path / "bad.yaml"
    bad.write_text(services_file.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_services(bad)
    assert expected in str(info.value)


def test_conditions_are_walked_not_evaluated():
    assert Condition("result < 0.05")(0.01) and not Condition("result < 0.05")(0.05)
    assert Condition("0.9 <= result <= 1 and not result == 0.95")(0.96)
    assert not Condition("0.9 <= result <= 1 and not result == 0.95")(0.95)
    assert Condition("abs(result) > 2 or result == -1")(-3) and Condition("abs(result) > 2 or result == -1")(
        -1
    )
    assert not Condition("result > 0")(float("nan"))  # NaN meets no comparison
    for text in ("result", "(lambda: 1)() < 2", "result if 1 else 2", "[result][0] < 1", "result ** 2 < 1",
                 "open('x') < 1", "abs(result, 1) < 1", "result in (1, 2)", "result < True"):  # fmt: skip
        with pytest.raises(ValueError, match=r"allowed|must be|only"):
            Condition(text)


# -- the state machine, in-process ------------------------------------------------------------------
def test_every_gate_is_sampled_over_the_whole_pause_and_once_after_the_last_step(driver, fakes):
    deploy_id = driver.start("watched", new_id(), version="v2")
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert [(g["step"], g["rounds"], g["ok"]) for g in rec["gates"]] == [
        (0, 5, True),
        (1, 5, True),
        (2, 1, True),
    ]
    for metric in ("smoke[0]", "error_rate"):
        assert [(m["step"], m["index"]) for m in rec["measurements"] if m["metric"] == metric] == [
            (0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0)
        ]  # fmt: skip
    assert set(verdicts(rec)) == {"success"} and all(m["value"] == 0.0 for m in rec["measurements"]
                                                      if m["metric"] == "error_rate")  # fmt: skip
    sent = [(p["step"], p["sample"]) for p in analyze_messages(driver)]
    assert sent == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 1), (1, 2), (1, 3), (1, 4)]
    assert [c["weight"] for c in fakes.webhook_calls] == [10, 50, 100]


def test_a_service_without_gates_waits_its_pauses_as_delayed_steps(driver, fakes):
    deploy_id = driver.start("ungated", new_id())
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert analyze_messages(driver) == [] and rec["measurements"] == []
    assert [(g["step"], g["rounds"], g["ok"]) for g in rec["gates"]] == [
        (0, 1, True),
        (1, 1, True),
        (2, 1, True),
    ]
    assert [p["step"] for p, d in driver.sent] == [0, 1, 2]


def test_a_regression_after_the_first_samples_passed_rolls_back(driver, fakes):
    driver.state.set_stable("watched", {"version": "v1", "deploy_id": "old", "provider_deploy_id": "x"})
    fakes.script.error_rates = [0.01, 0.02, 0.3]  # the third sample of step 0's pause regresses
    deploy_id = driver.start("watched", new_id(), version="v2")
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "rolled_back", rec
    assert verdicts(rec) == ["success", "success", "failure"]
    assert [m["value"] for m in rec["measurements"] if m["metric"] == "error_rate"] == [0.01, 0.02, 0.3]
    assert rec["error"].startswith("gate failed at step 0 (10%): error_rate: failed (1) > failure_limit (0)")
    assert "0.3" in rec["error"]
    assert rec["analysis"]["state"] == "failed" and rec["gates"][-1]["verdict"] == "failed"
    assert fakes.webhook_calls[-1]["action"] == "rollback" and fakes.webhook_calls[-1]["version"] == "v1"
    assert [c["weight"] for c in fakes.webhook_calls if c["action"] == "deploy"] == [10]


def test_a_failure_within_failure_limit_goes_on_one_more_rolls_back(driver, fakes):
    fakes.script.error_rates = [0.2]  # one failure at step 0: failure_limit 1 allows it
    ok = driver.start("tolerant", new_id())
    driver.run()
    rec = driver.record(ok)
    assert rec["status"] == "succeeded", rec
    assert verdicts(rec, step=0) == ["failure", "success", "success", "success", "success"]
    assert rec["gates"][0]["ok"] and rec["analysis"]["counts"]["error_rate"]["failed"] == 0  # the last step's
    fakes.script.error_rates = [0.01, 0.01, 0.01, 0.01, 0.01, 0.2, 0.01, 0.2]  # two in step 1
    bad = driver.start("tolerant", new_id())
    driver.run()
    rec = driver.record(bad)
    assert rec["status"] == "rolled_back", rec
    assert verdicts(rec, step=1) == ["failure", "success", "failure"]
    assert "gate failed at step 1 (50%): error_rate: failed (2) > failure_limit (1)" in rec["error"]


async def test_metric_source_down_pauses_inconclusive_then_promote_goes_on(
    driver, fakes, dapi, auth, rclient
):
    fakes.script.metrics_down = True
    deploy_id = driver.start("flaky", new_id(), version="v2")
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "paused", rec
    assert rec["inconclusive_step"] == 0 and rec["analysis"]["state"] == "inconclusive"
    assert verdicts(rec) == ["error", "error"]  # consecutive_error_limit 1: the second error pauses
    assert rec["paused_reason"].startswith(
        "analysis inconclusive at step 0 (10%): error_rate: metric source unreachable, errors in a row (2) "
        "> consecutive_error_limit (1)"
    )
    assert not driver.queue  # nothing more is sampled while it waits
    headers = auth("deploy", sub="dana")
    shown = await (await dapi.get(f"/api/v1/deploys/{deploy_id}", headers=headers)).json()
    assert shown["status"] == "paused" and shown["paused_reason"] == rec["paused_reason"]
    assert [(m["step"], m["index"], m["metric"], m["verdict"]) for m in shown["measurements"]] == [
        (0, 0, "error_rate", "error"), (0, 1, "error_rate", "error")
    ]  # fmt: skip
    assert all(m["at"] for m in shown["measurements"])
    fakes.script.metrics_down = False
    promoted = await dapi.post(f"/api/v1/deploys/{deploy_id}/promote", headers=headers)
    assert promoted.status == 202, await promoted.text()
    assert (await promoted.json())["accepted_step"] == 0
    [message] = queued_step_messages(rclient)
    assert message == {"deploy_id": deploy_id, "step": 0, "action": "promote"}
    driver.queue.append((message, 0))
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert [c["weight"] for c in fakes.webhook_calls] == [
        10,
        50,
        100,
    ]  # on to the next step, not 100 % at once
    assert verdicts(rec, step=1) == ["success"] * 3 and rec["inconclusive_step"] is None


async def test_inconclusive_beyond_its_limit_pauses_and_abort_rolls_back(driver, fakes, dapi, auth):
    driver.state.set_stable("judged", {"version": "v1", "deploy_id": "old", "provider_deploy_id": "x"})
    deploy_id = driver.start("judged", new_id(), version="v2")  # latency 0.05: neither condition holds
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "paused", rec
    assert verdicts(rec, "latency") == ["inconclusive"] * 3  # inconclusive_limit 2
    assert "latency: inconclusive (3) > inconclusive_limit (2)" in rec["paused_reason"]
    headers = auth("deploy", sub="eve")
    page = await (await dapi.post(f"/api/v1/deploys/{deploy_id}/abort", headers=headers)).json()
    assert page["requested"] == "abort"
    driver.queue.append(({"deploy_id": deploy_id, "action": "abort"}, 0))
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "canceled" and rec["error"] == "aborted by eve"
    assert fakes.webhook_calls[-1]["action"] == "rollback" and fakes.webhook_calls[-1]["version"] == "v1"


def test_a_redelivered_round_is_not_counted_twice_and_a_lost_send_is_repeated(driver, fakes, rclient):
    deploy_id = driver.start("watched", new_id())
    driver.run(until=lambda: any(p.get("action") == "analyze" for p, _ in driver.queue))
    [(first, _)] = [m for m in driver.queue if m[0].get("action") == "analyze"]
    assert first["sample"] == 1
    driver.run(until=lambda: driver.record(deploy_id)["analysis"]["next"] == 2)
    before = driver.record(deploy_id)
    driver.rollout.handle(StepPayload.model_validate(first))  # redelivered after it was taken
    after = driver.record(deploy_id)
    assert after["measurements"] == before["measurements"] and after["analysis"] == before["analysis"]
    # a worker killed after writing round 1 and before sending round 2: nothing was sent
    driver.queue.clear()
    rclient.hset(KEYS.deploy(deploy_id), "analysis", json.dumps({**after["analysis"], "sent": 1}))
    driver.rollout.handle(StepPayload.model_validate(first))  # round 1's message comes back
    assert [p for p, _ in driver.queue] == [
        {"deploy_id": deploy_id, "step": 0, "action": "analyze", "sample": 2}
    ]
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    keys = [(m["step"], m["index"], m["metric"]) for m in rec["measurements"]]
    assert len(keys) == len(set(keys)) == 2 * (5 + 5 + 1)


def test_an_operator_pause_during_a_run_stops_sampling_and_resume_goes_on(driver, fakes, rclient):
    deploy_id = driver.start("watched", new_id())
    driver.run(until=lambda: (driver.record(deploy_id).get("analysis") or {}).get("next") == 2)
    rclient.hset(KEYS.deploy(deploy_id), mapping={"status": "paused", "hold": "1"})  # deploy_action.lua
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "paused" and rec["analysis"]["next"] == 2 and not driver.queue
    rclient.hset(KEYS.deploy(deploy_id), mapping={"status": "canary", "hold": "0"})
    driver.queue.append(({"deploy_id": deploy_id, "step": 0, "action": "resume"}, 0))
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert [m["index"] for m in rec["measurements"] if m["metric"] == "error_rate" and m["step"] == 0] == [
        0, 1, 2, 3, 4
    ]  # fmt: skip


# -- the dashboard ----------------------------------------------------------------------------------
async def test_the_deploy_page_shows_every_measurement_and_the_reason_of_a_pause(
    driver, fakes, dsettings, aiohttp_client, token
):
    from dashboard.app import create_app
    from tests.dashboard.conftest import login

    fakes.script.metrics_down = True
    deploy_id = driver.start("flaky", new_id())
    driver.run()
    client = await aiohttp_client(create_app(dsettings))
    await login(client, token("operator", sub="erin"))
    page = await (await client.get(f"/deploys/{deploy_id}")).text()
    assert 'id="deploy-paused-reason"' in page and "metric source unreachable" in page
    table = page.split('id="deploy-measurements"')[1].split("</table>")[0]
    assert table.count("<tr data-measurement") == 2 and table.count(">error<") == 2
    assert "503" in table  # the error's detail
    button = page.split(f'data-post="/api/deploys/{deploy_id}/promote"')[1].split(">")[0]
    assert "hidden" not in button


async def test_resume_accepts_too_and_the_next_step_is_judged_again(driver, fakes, dapi, auth, rclient):
    deploy_id = driver.start("judged", new_id())
    driver.run()
    assert driver.record(deploy_id)["inconclusive_step"] == 0
    headers = auth("deploy", sub="fay")
    resumed = await dapi.post(f"/api/v1/deploys/{deploy_id}/resume", headers=headers)
    assert resumed.status == 202, await resumed.text()
    assert (await resumed.json())["accepted_step"] == 0
    [message] = queued_step_messages(rclient)
    assert message == {"deploy_id": deploy_id, "step": 0, "action": "resume"}
    driver.queue.append((message, 0))
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "paused" and rec["inconclusive_step"] == 1, rec  # still neither condition
    assert rec["analysis"]["step"] == 1 and verdicts(rec, "latency", step=1) == ["inconclusive"] * 3
    assert [g["verdict"] for g in rec["gates"]] == ["inconclusive", "inconclusive"]
    assert [c["weight"] for c in fakes.webhook_calls] == [10, 50]
    assert (await dapi.post(f"/api/v1/deploys/{deploy_id}/pause", headers=headers)).status == 409


def test_a_promote_during_a_run_skips_the_rest_of_it(driver, fakes, rclient):
    deploy_id = driver.start("watched", new_id())
    driver.run(until=lambda: (driver.record(deploy_id).get("analysis") or {}).get("next") == 2)
    rclient.hset(
        KEYS.deploy(deploy_id), mapping={"promote": "1", "last_action_by": "gus"}
    )  # deploy_action.lua
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "succeeded", rec
    assert [c["weight"] for c in fakes.webhook_calls] == [10, 100]
    assert [(m["step"], m["index"]) for m in rec["measurements"] if m["metric"] == "error_rate"] == [
        (0, 0), (0, 1), (0, 2), (2, 0)
    ]  # fmt: skip


# -- the CLI ----------------------------------------------------------------------------------------
async def test_cli_confirm_accepts_an_inconclusive_pause_and_watch_says_why(
    driver, fakes, dapi, dsettings, rclient, monkeypatch
):
    from shared.devtools import deploy_client

    monkeypatch.setenv("OPSDECK_URL", str(dapi.make_url("")).rstrip("/"))
    monkeypatch.setattr(deploy_client, "WATCH_INTERVAL", 0.05)
    deploy_id = driver.start("judged", new_id())
    driver.run()
    out = io.StringIO()
    assert await asyncio.to_thread(deploy_client.confirm, dsettings, deploy_id, False, out) == 0
    assert (
        out.getvalue()
        == f"deploy {deploy_id} accepted: judged's step 0 (10%) counts as passed, on to step 1 (50%)\n"
    )
    [message] = queued_step_messages(rclient)
    driver.queue.append((message, 0))
    driver.run()  # step 1's run is inconclusive too: paused again
    base, token = deploy_client.coordinator(dsettings)
    watch = io.StringIO()
    following = asyncio.create_task(
        asyncio.to_thread(deploy_client.follow, base, token, f"/api/v1/deploys/{deploy_id}", watch)
    )
    for _ in range(400):
        if "to accept the step" in watch.getvalue():
            break
        await asyncio.sleep(0.05)
    lines = watch.getvalue().splitlines()
    assert lines[1].startswith("  analysis inconclusive at step 1 (50%): latency: inconclusive (3)"), lines
    assert lines[
        2
    ] == f"  to accept the step: opsdeck deploy --confirm {deploy_id}; to stop: abort it on the " + (
        "dashboard (or POST .../abort)"
    )
    rclient.hset(KEYS.deploy(deploy_id), mapping={"requested": "abort", "last_action_by": "hal"})
    driver.queue.append(({"deploy_id": deploy_id, "action": "abort"}, 0))
    driver.run()
    assert await following == 1  # canceled
    assert "canceled" in watch.getvalue().splitlines()[-1]


class Killed(BaseException):
    """The worker process dies here (nothing after it runs, no handler catches it)."""


def die_once(monkeypatch, obj, name, when=lambda *a, **k: True):
    """Make ``obj.name`` kill the 'process' the first time ``when`` holds for its arguments."""
    real, state = getattr(obj, name), {"dead": False}

    def dying(*args, **kwargs):
        if not state["dead"] and when(*args, **kwargs):
            state["dead"] = True
            raise Killed(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, dying)


def test_a_verdict_written_before_a_kill_is_acted_on_after_redelivery(driver, fakes, monkeypatch):
    driver.state.set_stable("watched", {"version": "v1", "deploy_id": "old", "provider_deploy_id": "x"})
    fakes.script.error_rates = [0.3]  # round 0 fails, in the step's own message
    die_once(monkeypatch, driver.rollout, "_fail")
    deploy_id = driver.start("watched", new_id(), version="v2")
    with pytest.raises(Killed):
        driver.run()
    rec = driver.record(deploy_id)
    assert rec["analysis"]["state"] == "failed" and rec["status"] == "in_progress"  # not rolled back yet
    driver.queue.append(({"deploy_id": deploy_id, "step": 0}, 0))  # the step message comes back
    driver.run()
    rec = driver.record(deploy_id)
    assert rec["status"] == "rolled_back" and rec["error"].startswith(
        "gate failed at step 0 (10%): error_rate"
    )
    assert verdicts(rec) == ["failure"] and len(rec["gates"]) == 1  # not measured again


def test_an_inconclusive_verdict_written_before_a_kill_still_pauses(driver, fakes, monkeypatch):
    fakes.script.metrics_down = True
    die_once(monkeypatch, driver.rollout, "_transition", lambda rec, status, **f: status == "paused")
    deploy_id = driver.start("flaky", new_id())
    with pytest.raises(Killed):
        driver.run()
    rec = driver.record(deploy_id)
    assert rec["analysis"]["state"] == "inconclusive" and rec["status"] == "canary"
    driver.queue.append(({"deploy_id": deploy_id, "step": 0, "action": "analyze", "sample": 1}, 0))
    driver.run()
    rec = driver.record(deploy_id)
    assert (
        rec["status"] == "paused" and rec["inconclusive_step"] == 0 and "unreachable" in rec["paused_reason"]
    )
    assert verdicts(rec) == ["error", "error"]


def test_a_run_in_canary_is_no_notification_of_its_own(driver, fakes):
    """During step n's run the rollout is ``canary`` at step n: for n > 0 that is the ``canary:n``
    event its advance already sent (one per event), for step 0 no event at all."""
    from worker.deploy.notify import event_for

    events = []
    driver.rollout.on_transition = lambda deploy_id, fields: events.append(
        event_for(str(fields["status"]), fields.get("step", driver.record(deploy_id)["step"]))
    )
    deploy_id = driver.start("watched", new_id())
    driver.run()
    assert driver.record(deploy_id)["status"] == "succeeded"
    told = [e for i, e in enumerate(events) if e and e not in events[:i]]  # the notifier sends each once
    assert told == ["started", "canary:1", "canary:2", "succeeded"]
    assert "canary:0" not in events


async def test_lists_leave_the_measurements_out_one_deploy_has_them(driver, fakes, dapi, auth):
    deploy_id = driver.start("watched", new_id(), version="v5")
    driver.run()
    headers = auth("deploy")
    [item] = (await (await dapi.get("/api/v1/deploys?service=watched", headers=headers)).json())["items"]
    assert item["id"] == deploy_id and item["status"] == "succeeded" and item["version"] == "v5"
    assert "measurements" not in item and item["analysis"]["state"] == "passed" and len(item["gates"]) == 3
    one = await (await dapi.get(f"/api/v1/deploys/{deploy_id}", headers=headers)).json()
    assert len(one["measurements"]) == 22 and {k: v for k, v in one.items() if k != "measurements"} == item
