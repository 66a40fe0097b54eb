-- Roll the shared LinUCB back to a kept checkpoint, or close an automatic check that decided not
-- to, in one atomic call (issue 18, part 4). Run by the worker (automatic, after the check that
-- bandit_update.lua flagged) and by the coordinator (POST /api/v1/bandit/rollback, manual).
--
-- A rollback discards exactly the ratings its caller saw: with `expected` set (automatic), the
-- script refuses ({0, "raced"}) when any rating was applied since the caller read `applied`, so a
-- rating that raced the decision is never thrown away unseen; the caller reads and decides again.
-- A manual rollback (no `expected`) discards whatever was applied after the checkpoint: that is
-- the operator's request. Either way nothing interleaves with the copy: an update is wholly
-- before it (and rolled back) or wholly after it (applied to the restored model).
--
-- The restore copies every arm's m, n, reward_sum, updates and since from the checkpoint, bumps
-- the state's `epoch` (bandit_reinvert.lua then refuses an inverse computed before it), restarts
-- the checkpoint window, appends {rollback = the checkpoint's log entry id} to the rating log (so
-- worker/bandit/redis_state.py:recompute rebuilds the same model), records why (rollbacks list,
-- newest first, capped) and counts it per trigger in the guard hash (the agent exports
-- coordinator_bandit_rollbacks_total from it). An automatic rollback is refused ({0, "cooldown"})
-- within `cooldown` ms of the last automatic one.
--
-- KEYS: 1 state hash, 2 guard hash, 3 checkpoints hash, 4 checkpoint meta hash, 5 log stream,
--       6 rollbacks list
-- ARGV: 1 trigger (auto|manual), 2 checkpoint id ("": an automatic check without rollback),
--       3 expected applied count ("": any), 4 cooldown (ms), 5 reason (JSON object),
--       6 rollbacks kept, 7 log maxlen (0: no trimming)
-- Returns {1, record JSON} when rolled back; {0, "raced" | "cooldown" | "checked"};
-- {-1, "unknown checkpoint"}.
local guard = KEYS[2]
local trigger = ARGV[1]
local applied = tonumber(redis.call("hget", guard, "applied") or "0")
if ARGV[3] ~= "" and applied ~= tonumber(ARGV[3]) then
    return {0, "raced"}
end
local reason = cjson.decode(ARGV[5])
local now = redis.call("time")
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
reason.at_ms = now_ms
if ARGV[2] == "" then
    reason.outcome = "kept"
    redis.call("hset", guard, "pending", 0, "last_check", cjson.encode(reason))
    return {0, "checked"}
end
local id = ARGV[2]
local raw = redis.call("hget", KEYS[4], id)
if not raw then
    return {-1, "unknown checkpoint"}
end
if trigger == "auto" then
    local last = tonumber(redis.call("hget", guard, "last_auto_ms") or "")
    if last and now_ms - last < tonumber(ARGV[4]) then
        reason.outcome = "cooldown"
        redis.call("hset", guard, "pending", 0, "last_check", cjson.encode(reason))
        return {0, "cooldown"}
    end
end
local meta = cjson.decode(raw)

local names = {}
local sources = {}
local window = {}
for arm in string.gmatch(redis.call("hget", KEYS[1], "arms"), "[^,]+") do
    for _, f in ipairs({"m", "n", "reward_sum", "updates", "since"}) do
        names[#names + 1] = arm .. ":" .. f
        sources[#sources + 1] = id .. ":" .. arm .. ":" .. f
    end
    for _, f in ipairs({"n", "s", "q"}) do
        window[#window + 1] = "seg:" .. arm .. ":" .. f
    end
end
local values = redis.call("hmget", KEYS[3], unpack(sources))
local copy = {}
for i, name in ipairs(names) do
    if not values[i] then
        return {-1, "unknown checkpoint"}
    end
    copy[#copy + 1] = name
    copy[#copy + 1] = values[i]
end
redis.call("hset", KEYS[1], unpack(copy))
redis.call("hdel", guard, unpack(window))
local epoch = redis.call("hincrby", KEYS[1], "epoch", 1)

local maxlen = tonumber(ARGV[7])
if maxlen > 0 then
    redis.call("xadd", KEYS[5], "MAXLEN", "~", maxlen, "*", "rollback", meta.log_id, "checkpoint", id)
else
    redis.call("xadd", KEYS[5], "*", "rollback", meta.log_id, "checkpoint", id)
end
local record = {at_ms = now_ms, trigger = trigger, checkpoint = tonumber(id), checkpoint_applied = meta.applied,
    applied = applied, epoch = epoch, reason = reason}
local encoded = cjson.encode(record)
redis.call("lpush", KEYS[6], encoded)
redis.call("ltrim", KEYS[6], 0, tonumber(ARGV[6]) - 1)
redis.call("hincrby", guard, "rollbacks:" .. trigger, 1)
redis.call("hset", guard, "pending", 0)  -- a check still due judged the model now replaced
if trigger == "auto" then
    reason.outcome = "rolled back"
    redis.call("hset", guard, "last_auto_ms", now_ms, "pending", 0, "last_check", cjson.encode(reason))
end
return {1, encoded}
