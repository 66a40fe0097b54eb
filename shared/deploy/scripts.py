"""Lua scripts that change deploy records atomically (run by the coordinator and the worker).

``CREATE`` adds a record and claims the service (one active deploy per service): with
``exclusive`` a busy service is a conflict (the API's 409), without it the deploy is recorded as
queued behind the active one (the task path) and claims the service later with ``CLAIM``.
A pointer to a deploy that has ended or vanished is taken over. ``ACTION`` applies an operator
action when the deploy's status allows it.
"""

from __future__ import annotations

_ACTIVE_FN = """
local function is_active(prefix, id)
    local st = redis.call("hget", prefix .. id, "status")
    return st == "queued" or st == "in_progress" or st == "canary" or st == "paused" or st == "promoting"
end
"""

#: KEYS: 1 deploy hash, 2 deploys:all, 3 deploys:service:<s>, 4 active pointer
#: ARGV: 1 id, 2 created (ms), 3 exclusive "1"|"0", 4 deploy key prefix, 5.. field, value, ...
#: Returns {"created", active id} | {"exists", status} | {"conflict", active id}.
CREATE = (
    _ACTIVE_FN
    + """
if redis.call("exists", KEYS[1]) == 1 then
    return {"exists", redis.call("hget", KEYS[1], "status")}
end
local active = redis.call("get", KEYS[4])
if active and active ~= ARGV[1] and is_active(ARGV[4], active) then
    if ARGV[3] == "1" then return {"conflict", active} end
else
    redis.call("set", KEYS[4], ARGV[1])
    active = ARGV[1]
end
redis.call("hset", KEYS[1], unpack(ARGV, 5))
redis.call("zadd", KEYS[2], ARGV[2], ARGV[1])
redis.call("zadd", KEYS[3], ARGV[2], ARGV[1])
return {"created", active}
"""
)

#: KEYS: 1 active pointer. ARGV: 1 id, 2 deploy key prefix. Returns the active id after the call.
CLAIM = (
    _ACTIVE_FN
    + """
local active = redis.call("get", KEYS[1])
if active and active ~= ARGV[1] and is_active(ARGV[2], active) then return active end
redis.call("set", KEYS[1], ARGV[1])
return ARGV[1]
"""
)

#: KEYS: 1 active pointer. ARGV: 1 id. Deletes the pointer only if it names this deploy.
RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end
return 0
"""

#: KEYS: 1 deploy hash. ARGV: 1 action, 2 who, 3 now (ms), 4 steps left ("1" if any).
#: Returns {"ok", new status, enqueue "1"|"0"} or {"conflict", status} or {"missing", ""}.
ACTION = """
local st = redis.call("hget", KEYS[1], "status")
if not st then return {"missing", ""} end
local a, who, now = ARGV[1], ARGV[2], ARGV[3]
local running = st == "in_progress" or st == "canary" or st == "paused" or st == "promoting"
local function ok(status, enqueue)
    redis.call("hset", KEYS[1], "status", status, "updated_at", now, "last_action", a, "last_action_by", who)
    return {"ok", status, enqueue}
end
if a == "pause" then
    if st == "canary" then redis.call("hset", KEYS[1], "hold", "1") return ok("paused", "0") end
    if st == "in_progress" or st == "queued" then
        redis.call("hset", KEYS[1], "hold", "1") return ok(st, "0")
    end
elseif a == "resume" then
    if st == "paused" then redis.call("hset", KEYS[1], "hold", "0") return ok("canary", "1") end
    if redis.call("hget", KEYS[1], "hold") == "1" and running then
        redis.call("hset", KEYS[1], "hold", "0") return ok(st, "0")
    end
elseif a == "promote" then
    if (st == "in_progress" or st == "canary" or st == "paused") and ARGV[4] == "1" then
        redis.call("hset", KEYS[1], "promote", "1", "hold", "0")
        if st == "in_progress" then return ok(st, "0") end
        return ok("canary", "1")
    end
elseif a == "abort" then
    if running or st == "queued" then redis.call("hset", KEYS[1], "requested", "abort") return ok(st, "1") end
elseif a == "rollback" then
    if running or st == "succeeded" then
        redis.call("hset", KEYS[1], "requested", "rollback") return ok(st, "1")
    end
end
return {"conflict", st}
"""
