"""The deploy API and the ``deploy`` task type through the coordinator (real Redis, no worker)."""

from __future__ import annotations

import orjson
import pytest
from dramatiq import Message

from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import SECRET

KEYS = Keys()


@pytest.fixture
async def dapi(aiohttp_client, dsettings):
    from coordinator.app import create_app

    return await aiohttp_client(create_app(dsettings))


def queued_messages(rclient, queue):
    return [
        Message.decode(rclient.hget(KEYS.queue_messages(queue), i))
        for i in rclient.lrange(KEYS.queue(queue), 0, -1)
    ]


async def test_deploy_task_type_is_accepted_for_a_configured_service(dapi, auth, rclient):
    body = {"type": "deploy", "payload": {"service": "test"}, "priority": "P2"}
    resp = await dapi.post("/api/v1/tasks", json=body, headers=auth())
    assert resp.status == 202, await resp.text()
    [message] = queued_messages(rclient, "deploy.p2")
    assert message.actor_name == "deploy"
    assert message.args[0]["service"] == "test"
    bad = await dapi.post(
        "/api/v1/tasks", json={"type": "deploy", "payload": {"service": "nope"}}, headers=auth()
    )
    assert bad.status == 422
    [field] = (await bad.json())["error"]["fields"]
    assert field["loc"] == ["body.payload", "service"]
    assert "unknown service 'nope'" in field["msg"]


async def test_without_a_services_file_every_deploy_is_422(aiohttp_client, redis_url, tmp_path, auth):
    from coordinator.app import create_app

    settings = Settings(redis_url=redis_url, jwt_secret=SECRET, opsdeck_var_dir=tmp_path)  # type: ignore[arg-type]
    client = await aiohttp_client(create_app(settings))
    resp = await client.post(
        "/api/v1/tasks", json={"type": "deploy", "payload": {"service": "test"}}, headers=auth()
    )
    assert resp.status == 422
    assert "no services configured" in (await resp.json())["error"]["fields"][0]["msg"]
    resp = await client.post("/api/v1/deploys", json={"service": "test"}, headers=auth("deploy"))
    assert resp.status == 422
    services = await (await client.get("/api/v1/services", headers=auth("deploy"))).json()
    assert services == {"items": []}


async def test_create_deploy_records_enqueues_and_refuses_a_second_one(dapi, auth, rclient):
    headers = auth("deploy", sub="alice")
    resp = await dapi.post("/api/v1/deploys", json={"service": "api", "version": "v2"}, headers=headers)
    assert resp.status == 202, await resp.text()
    accepted = await resp.json()
    assert accepted["id"] == accepted["task_id"]
    assert accepted["status_url"] == f"/api/v1/deploys/{accepted['id']}" == resp.headers["Location"]
    [message] = queued_messages(rclient, "deploy.p1")
    assert message.message_id == accepted["id"]
    assert message.args[0] == {"service": "api", "version": "v2", "strategy": "canary", "recorded": True}
    record = await (await dapi.get(accepted["status_url"], headers=headers)).json()
    assert record["status"] == "queued" and record["trigger"] == "alice"
    assert record["steps"] == [1, 5, 25, 100] and record["provider"] == "webhook"
    again = await dapi.post("/api/v1/deploys", json={"service": "api"}, headers=headers)
    assert again.status == 409
    assert accepted["id"] in (await again.json())["error"]["message"]
    other = await dapi.post("/api/v1/deploys", json={"service": "site"}, headers=headers)
    assert other.status == 202
    listed = await (await dapi.get("/api/v1/deploys?service=api", headers=headers)).json()
    assert [d["id"] for d in listed["items"]] == [accepted["id"]]
    everything = await (await dapi.get("/api/v1/deploys", headers=headers)).json()
    assert len(everything["items"]) == 2


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"service": "ghost"}, ["body", "service"]),
        ({"service": "api", "version": "$(rm -rf /)"}, ["body", "version"]),
        ({"service": "api", "strategy": "yolo"}, ["body", "strategy"]),
        ({"service": "api", "url": "http://evil"}, ["body", "url"]),
    ],
)
async def test_create_deploy_validation(dapi, auth, body, loc):
    resp = await dapi.post("/api/v1/deploys", json=body, headers=auth("deploy"))
    assert resp.status == 422
    assert (await resp.json())["error"]["fields"][0]["loc"] == loc


async def test_scope_and_unknown_ids(dapi, auth):
    assert (await dapi.post("/api/v1/deploys", json={"service": "api"}, headers=auth())).status == 403
    assert (await dapi.get("/api/v1/deploys/not-an-id", headers=auth("deploy"))).status == 404
    missing = "00000000-0000-4000-8000-000000000000"
    assert (await dapi.post(f"/api/v1/deploys/{missing}/abort", headers=auth("deploy"))).status == 404


async def test_actions_flag_the_record_and_enqueue_step_messages(dapi, auth, rclient):
    headers = auth("deploy", sub="bob")
    deploy_id = (await (await dapi.post("/api/v1/deploys", json={"service": "api"}, headers=headers)).json())[
        "id"
    ]
    assert (await dapi.post(f"/api/v1/deploys/{deploy_id}/resume", headers=headers)).status == 409
    paused = await dapi.post(f"/api/v1/deploys/{deploy_id}/pause", headers=headers)
    assert paused.status == 202
    assert (await paused.json())["hold"] == "1"
    rclient.hset(KEYS.deploy(deploy_id), "status", "canary")
    rclient.hset(KEYS.deploy(deploy_id), "step", "1")
    assert (await (await dapi.post(f"/api/v1/deploys/{deploy_id}/pause", headers=headers)).json())[
        "status"
    ] == "paused"
    resumed = await dapi.post(f"/api/v1/deploys/{deploy_id}/resume", headers=headers)
    assert (await resumed.json())["status"] == "canary"
    aborted = await dapi.post(f"/api/v1/deploys/{deploy_id}/abort", headers=headers)
    assert (await aborted.json())["requested"] == "abort"
    steps = queued_messages(rclient, "deploy.p0")
    assert [(m.actor_name, m.args[0]["action"]) for m in steps] == [
        ("deploy_step", "resume"),
        ("deploy_step", "abort"),
    ]
    assert all(m.args[0] == {"deploy_id": deploy_id, "step": 1, "action": m.args[0]["action"]} for m in steps)
    rclient.hset(KEYS.deploy(deploy_id), "status", "failed")
    assert (await dapi.post(f"/api/v1/deploys/{deploy_id}/promote", headers=headers)).status == 409


async def test_services_show_stable_and_current_versions(dapi, auth, rclient):
    rclient.hset(
        KEYS.deploy_stable("site"), mapping={"version": "v1", "deploy_id": "d1", "at": "1700000000000"}
    )
    headers = auth("deploy")
    deploy_id = (await (await dapi.post("/api/v1/deploys", json={"service": "site", "version": "v2"},
                                        headers=headers)).json())["id"]  # fmt: skip
    items = {
        s["name"]: s for s in (await (await dapi.get("/api/v1/services", headers=headers)).json())["items"]
    }
    assert set(items) == {"api", "site", "test", "web"}
    site = items["site"]
    assert site["provider"] == "render" and site["strategy"] == "direct" and site["steps"] == [100]
    assert site["stable"]["version"] == "v1" and site["stable"]["at"].startswith("2023-11-14")
    assert site["active_deploy"] == {"id": deploy_id, "version": "v2", "status": "queued"}
    assert site["current_version"] == "v2"
    assert items["api"]["stable"] is None and items["api"]["steps"] == [1, 5, 25, 100]


def test_records_decode_json_fields(rclient, dsettings):
    from shared.deploy.models import decode_deploy, encode_fields

    fields = encode_fields({"gates": [{"step": 0}], "step": 2, "error": None, "created_at": 1700000000000})
    assert fields["error"] == "" and orjson.loads(fields["gates"]) == [{"step": 0}]
    decoded = decode_deploy(fields)
    assert decoded["step"] == 2 and decoded["error"] is None and decoded["created_at"].endswith("Z")
