"""Idempotency keys per subject (issue 14, item 7): the (subject, key) pair is stored
unambiguously, so ``alice`` + ``x:K`` and ``alice:x`` + ``K`` are two tasks; keys stored in the
old form (``idem:{subject}:{key}``) within TASK_TTL still replay their task, for their owner only."""

from __future__ import annotations

import pytest

from shared.keys import Keys

KEYS = Keys()
BODY = {"type": "echo", "payload": {"n": 1}}


async def submit(api, auth, sub, key, payload=None):
    body = {**BODY, "idempotency_key": key, **({"payload": payload} if payload is not None else {})}
    resp = await api.post("/api/v1/tasks", json=body, headers=auth(sub=sub))
    assert resp.status in (200, 202, 409), await resp.text()
    return resp.status, (await resp.json()).get("id")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("alice:x", "K"), ("alice", "x:K")),
        (("alice", "x:K"), ("alice:x", "K")),
        (("a:b", "c:d"), ("a", "b:c:d")),
        (("1", "alice:K"), ("alice", "K")),  # a digit subject against a length prefix
        (("5:alice", "K"), ("alice", "K")),
    ],
)
async def test_two_subjects_whose_subject_and_key_join_alike_get_two_tasks(api, auth, rclient, first, second):
    status_a, task_a = await submit(api, auth, *first)
    status_b, task_b = await submit(api, auth, *second)
    assert (status_a, status_b) == (202, 202)
    assert task_a != task_b
    assert rclient.llen(KEYS.queue("default.p2")) == 2
    # and each still replays its own
    assert await submit(api, auth, *first) == (200, task_a)
    assert await submit(api, auth, *second) == (200, task_b)


def legacy_key(subject: str, key: str) -> str:
    """The form older coordinators stored (ambiguous when either part holds a colon)."""
    return f"{KEYS.prefix}idem:{subject}:{key}"


def as_stored_by_old_code(rclient, subject: str, key: str, task_id: str) -> None:
    """Rewrite the idempotency key of ``task_id`` into the old form (as an older coordinator
    would have stored it, same TTL), dropping any other form."""
    for name in rclient.scan_iter(match=f"{KEYS.prefix}idem*"):
        if rclient.get(name) == task_id.encode():
            rclient.delete(name)
    rclient.set(legacy_key(subject, key), task_id, ex=7 * 86400)


@pytest.mark.parametrize(
    ("subject", "key"), [("alice", "K"), ("alice", "x:K"), ("alice:x", "K"), ("a:b", "c:d")]
)
async def test_a_key_stored_in_the_old_form_still_replays_its_task(api, auth, rclient, subject, key):
    status, task_id = await submit(api, auth, subject, key)
    assert status == 202
    as_stored_by_old_code(rclient, subject, key, task_id)
    assert await submit(api, auth, subject, key) == (200, task_id)
    # a different request with the same key is still a conflict
    assert (await submit(api, auth, subject, key, payload={"n": 2}))[0] == 409
    assert rclient.llen(KEYS.queue("default.p2")) == 1


async def test_an_old_form_key_of_another_subject_does_not_collide(api, auth, rclient):
    """``alice:x`` + ``K`` stored ``idem:alice:x:K`` in the old form; ``alice`` + ``x:K`` reads the
    same name but must not get that task (nor a conflict), and ``alice:x`` still replays it."""
    status, theirs = await submit(api, auth, "alice:x", "K")
    assert status == 202
    as_stored_by_old_code(rclient, "alice:x", "K", theirs)
    status, mine = await submit(api, auth, "alice", "x:K", payload={"other": True})
    assert status == 202 and mine != theirs
    assert await submit(api, auth, "alice", "x:K", payload={"other": True}) == (200, mine)
    assert await submit(api, auth, "alice:x", "K") == (200, theirs)
    assert rclient.llen(KEYS.queue("default.p2")) == 2


def test_keys_name_the_pair_unambiguously():
    assert KEYS.idempotency("alice", "x:K") != KEYS.idempotency("alice:x", "K")
    assert KEYS.idempotency("1", "alice:K") != KEYS.idempotency("alice", "K")
    assert not KEYS.idempotency("alice", "K").startswith(KEYS.legacy_idempotency_prefix)
    assert KEYS.legacy_idempotency("alice", "K") == legacy_key("alice", "K")
