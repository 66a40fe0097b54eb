"""GET /api/v1/bandit lists checkpoints and rollbacks; POST /api/v1/bandit/rollback (admin) rolls
the shared model back to a kept checkpoint (issue 18, part 4). In process, real redis-server."""

from __future__ import annotations

import numpy as np

from shared.bandit_checkpoints import RollbackPolicy
from worker.bandit.features import DIM
from worker.bandit.linucb import ARMS
from worker.bandit.redis_state import RedisLinUCB, compare, recompute


def trained(rclient, settings) -> RedisLinUCB:
    m = RedisLinUCB(rclient, keys=settings.keys, warmup=0, checkpoint_every=50, checkpoints_kept=3,
                    policy=RollbackPolicy(20, 0.001, 0))  # fmt: skip
    xs = np.random.default_rng(5).random((170, DIM))
    xs[:, 0] = 1.0
    for t, x in enumerate(xs):
        m.update(ARMS[t % 3], x, (t % 5) / 4, key=f"k{t}")
    return m


async def test_the_bandit_view_lists_checkpoints(api, auth, rclient, settings):
    empty = await (await api.get("/api/v1/bandit", headers=auth("tasks:read"))).json()
    assert empty["checkpoints"] == [] and empty["rollbacks"] == [] and empty["last_check"] is None
    assert empty["rollbacks_total"] == {"auto": 0, "manual": 0} and empty["applied"] == 0
    m = trained(rclient, settings)
    body = await (await api.get("/api/v1/bandit", headers=auth("tasks:read"))).json()
    assert body["applied"] == 170
    assert [c["id"] for c in body["checkpoints"]] == [3, 2, 1] and body["checkpoints"] == m.checkpoints()
    first = body["checkpoints"][-1]
    assert first["applied"] == 50 and first["reward"]["count"] == 50
    assert first["reward"]["mean"] == sum((t % 5) / 4 for t in range(50)) / 50
    assert body["last_check"]["outcome"] == "kept"  # a steady stream: checked, nothing to do


async def test_manual_rollback_needs_admin_and_a_kept_checkpoint(api, auth, rclient, settings):
    m = trained(rclient, settings)
    url = "/api/v1/bandit/rollback"
    assert (
        await api.post(url, json={"checkpoint": 2}, headers=auth("tasks:write", "tasks:read"))
    ).status == 403
    resp = await api.post(url, json={"checkpoint": 9}, headers=auth("admin"))
    assert resp.status == 404
    assert (await resp.json())["error"]["fields"][0]["loc"] == ["body", "checkpoint"]
    for bad in ({"checkpoint": "2"}, {"checkpoint": 0}, {}, {"checkpoint": 2, "x": 1}):
        assert (await api.post(url, json=bad, headers=auth("admin"))).status == 422, bad
    resp = await api.post(url, json={"checkpoint": 2}, headers=auth("admin", sub="ops"))
    assert resp.status == 200, await resp.text()
    record = await resp.json()
    assert record["trigger"] == "manual" and record["checkpoint"] == 2 and record["checkpoint_applied"] == 100
    assert record["reason"] == {"why": "manual", "subject": "ops", "at_ms": record["at_ms"]}
    state = m.load()
    assert sum(state.updates) == 100 and compare(state, recompute(m.ratings())) == []
    body = await (await api.get("/api/v1/bandit", headers=auth("tasks:read"))).json()
    assert body["rollbacks"] == [record] and body["rollbacks_total"] == {"auto": 0, "manual": 1}
    assert sum(a["updates"] for a in body["arms"].values()) == 100 and body["applied"] == 170
