"""Coaching end to end: in-process coordinator → Redis (→ outbox → RabbitMQ) → a real worker agent
(Dramatiq) → answer, on both transports."""

from __future__ import annotations

import asyncio
import json
import time

import pika
import pytest
from dramatiq import Message

from shared.coaching import FEEDBACK
from shared.keys import Keys
from tests.conftest import BROKERS
from tests.helpers import task_fields, wait_for
from tests.worker.test_end_to_end import start_agent, wait_running, wait_status

KEYS = Keys()
pytestmark = pytest.mark.slow
# Waits that follow a submission run in a thread (asyncio.to_thread): the in-process coordinator
# (``api``) lives on the test's event loop, and with RabbitMQ so does its outbox relay; a wait
# blocking the loop would stall an entry that relay has read until another relay takes it over
# (OUTBOX_CLAIM_AFTER, 30 s).
CHAT = {"session_id": "e2e", "message": "We already use a competitor. Why switch?", "user_id": "seller-1"}


def result_of(rclient, task_id):
    return json.loads(task_fields(rclient, KEYS, task_id)["result"])


def redeliver(rclient, task_id, payload, broker_url=None):
    """What a worker killed after running the actor but before recording the end leaves behind:
    the record still says running, and the broker delivers the same message again (the Redis
    broker's maintenance puts it back on the queue; RabbitMQ requeues the dead consumer's unacked
    delivery, published here as it would arrive)."""
    queue = "coach.p2"
    options = {"redis_message_id": task_id, "correlation_id": "redo", "priority": "P2"}
    message = Message(
        queue_name=queue, actor_name=FEEDBACK.actor_name, args=(payload,), kwargs={}, options=options,
        message_id=task_id, message_timestamp=int(time.time() * 1000),
    ).encode()  # fmt: skip
    rclient.hset(KEYS.task(task_id), "status", "running")
    if broker_url is None:
        rclient.hset(KEYS.queue_messages(queue), task_id, message)
        rclient.rpush(KEYS.queue(queue), task_id)
        return
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:  # the queue exists: the worker declared it and consumed the feedback from it
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", queue, message, pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        connection.close()


def redelivered(rclient, task_id, broker_url):
    """The redelivered message ran: its record says succeeded again (and, on Redis, Dramatiq's
    queue is empty again; only the record says so on RabbitMQ, whose queue is not read here)."""
    drained = broker_url is not None or rclient.llen(KEYS.queue("coach.p2")) == 0
    return drained and task_fields(rclient, KEYS, task_id)["status"] == "succeeded"


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_chat_suggestion_and_feedback_once_through_a_real_worker(
    procs, env_factory, tmp_path, rclient, api, auth, broker_url
):
    start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    resp = await api.post("/api/v1/chat?wait=10", json=CHAT, headers=auth())
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["status"] == "succeeded" and answer["turn_number"] == 1
    assert answer["arm"] in ("npc", "tools", "knowledge")
    assert answer["suggestion"]["source"] == "builtin" and answer["suggestion"]["text"]
    assert answer["suggestion"]["arm"] == answer["arm"]

    later = await (await api.post("/api/v1/chat", json=CHAT, headers=auth())).json()
    assert later["turn_number"] == 2
    done = await asyncio.to_thread(wait_status, rclient, later["id"], "succeeded")
    assert result_of(rclient, done["id"])["turn_number"] == 2

    rating = {"session_id": "e2e", "turn_number": 1, "rating": 5}
    sent = [
        await (await api.post("/api/v1/feedback/submit", json=rating, headers=auth())).json() for _ in "ab"
    ]
    for s in sent:
        await asyncio.to_thread(wait_status, rclient, s["id"], "succeeded")
    applied = [result_of(rclient, s["id"])["applied"] for s in sent]
    assert sorted(applied) == [False, True]  # sent twice, counted once

    redeliver(rclient, sent[0]["id"], rating, broker_url)
    wait_for(lambda: redelivered(rclient, sent[0]["id"], broker_url), what="redelivery")
    assert task_fields(rclient, KEYS, sent[0]["id"])["attempts"] == "2"
    assert result_of(rclient, sent[0]["id"])["applied"] is False  # redelivered, still once

    bandit = await (await api.get("/api/v1/bandit", headers=auth())).json()
    assert bandit["decisions"] == 2 and bandit["phase"] == "warmup"
    assert sum(a["pulls"] for a in bandit["arms"].values()) == 2
    assert bandit["arms"][answer["arm"]]["updates"] == 1
    assert sum(a["updates"] for a in bandit["arms"].values()) == 1
    assert bandit["arms"][answer["arm"]]["mean_reward"] == 1.0


@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_ws_chat_pushes_the_suggestion_when_ready(procs, env_factory, tmp_path, rclient, api, auth):
    start_agent(procs, env_factory, tmp_path)
    wait_running(rclient, "agent")
    async with api.ws_connect("/ws/chat", headers=auth()) as ws:
        for n in (1, 2):
            await ws.send_json({**CHAT, "session_id": "ws", "message": f"What does it cost? ({n})"})
            accepted = await ws.receive_json(timeout=10)
            assert accepted["type"] == "accepted" and accepted["turn_number"] == n
            pushed = await ws.receive_json(timeout=10)
            assert pushed["type"] == "suggestion" and pushed["id"] == accepted["id"]
            assert pushed["status"] == "succeeded" and pushed["suggestion"]["text"]
