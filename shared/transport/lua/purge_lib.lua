-- What a purge does to the record of a task whose message it dropped, for both brokers
-- (queue_purge.lua for Redis, rabbit_purge_cancel.lua for RabbitMQ): a queued task becomes
-- canceled, leaves the queued index for the canceled one and gets a timeline event; a task in
-- another status is left alone (it was not waiting for that message).
-- shared.store.lua_source inlines this file where a script says "--! include purge_lib".

-- Returns true when the record became canceled.
local function cancel_purged(task_prefix, status_prefix, id, now, events, maxlen)
    local task = task_prefix .. id
    local info = redis.call("hmget", task, "status", "created_us", "type")
    if info[1] ~= "queued" then
        return false
    end
    redis.call("zrem", status_prefix .. "queued", id)
    redis.call("zadd", status_prefix .. "canceled", info[2] or 0, id)
    redis.call("hset", task, "status", "canceled", "updated_at", now, "finished_at", now,
        "error", "purged from its queue by an operator")
    redis.call("xadd", events, "MAXLEN", "~", maxlen, "*",
        "id", id, "type", info[3] or "", "status", "canceled", "ts", now, "worker", "dashboard")
    return true
end
