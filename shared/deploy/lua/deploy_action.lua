-- Apply an operator action (pause, resume, promote, abort, rollback) to a deploy when its status
-- allows it; the worker acts on the flags it sets. Promote of a deploy awaiting confirmation
-- confirms the step it waits before (confirmed_step) and sends it (it does not skip steps).
-- Promote or resume of a deploy paused by an inconclusive analysis (inconclusive_step set) accepts
-- that step's analysis (accepted_step) and goes on to the next step.
--
-- KEYS: 1 deploy hash
-- ARGV: 1 action, 2 who, 3 now (ms), 4 steps left ("1" if any)
-- Returns {"ok", new status, enqueue "1"|"0"} or {"conflict", status} or {"missing", ""}.
local st = redis.call("hget", KEYS[1], "status")
if not st then return {"missing", ""} end
local a, who, now = ARGV[1], ARGV[2], ARGV[3]
local running = st == "in_progress" or st == "canary" or st == "paused" or st == "promoting"
local waiting = st == "awaiting_confirmation"
local judged = st == "paused" and (redis.call("hget", KEYS[1], "inconclusive_step") or "") ~= ""
local function ok(status, enqueue)
    redis.call("hset", KEYS[1], "status", status, "updated_at", now, "last_action", a, "last_action_by", who)
    return {"ok", status, enqueue}
end
if judged and (a == "promote" or a == "resume") then
    redis.call("hset", KEYS[1], "accepted_step", redis.call("hget", KEYS[1], "inconclusive_step"), "hold", "0")
    return ok("in_progress", "1")
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
    if waiting then
        redis.call("hset", KEYS[1], "confirmed_step", redis.call("hget", KEYS[1], "confirm_step") or "")
        return ok("in_progress", "1")
    end
    if (st == "in_progress" or st == "canary" or st == "paused") and ARGV[4] == "1" then
        redis.call("hset", KEYS[1], "promote", "1", "hold", "0")
        if st == "in_progress" then return ok(st, "0") end
        return ok("canary", "1")
    end
elseif a == "abort" then
    if running or waiting or st == "queued" then
        redis.call("hset", KEYS[1], "requested", "abort") return ok(st, "1")
    end
elseif a == "rollback" then
    if running or waiting or st == "succeeded" then
        redis.call("hset", KEYS[1], "requested", "rollback") return ok(st, "1")
    end
end
return {"conflict", st}
