-- Cancel a task that has not started: queued|retrying → canceled. A queued message is also
-- removed from its Dramatiq queue; one already fetched is skipped by the worker's start check.
-- Returns "canceled" (also when it already was), the current status when it cannot be
-- canceled, or "" when unknown.
--
-- KEYS: 1 task hash, 2 events stream
-- ARGV: 1 task id, 2 now (ms), 3 dramatiq namespace, 4 status index prefix, 5 events maxlen
local status = redis.call("hget", KEYS[1], "status")
if not status then
    return ""
end
if status ~= "queued" and status ~= "retrying" then
    return status
end
local task_id = ARGV[1]
local info = redis.call("hmget", KEYS[1], "queue", "redis_message_id", "created_us", "type")
if status == "queued" and info[1] and info[2] then
    local queue = ARGV[3] .. ":" .. info[1]
    if redis.call("lrem", queue, 1, info[2]) > 0 then
        redis.call("hdel", queue .. ".msgs", info[2])
    end
end
redis.call("zrem", ARGV[4] .. status, task_id)
redis.call("zadd", ARGV[4] .. "canceled", info[3] or 0, task_id)
redis.call("hset", KEYS[1], "status", "canceled", "updated_at", ARGV[2], "finished_at", ARGV[2])
redis.call("xadd", KEYS[2], "MAXLEN", "~", ARGV[5], "*",
    "id", task_id, "type", info[4] or "", "status", "canceled", "ts", ARGV[2])
return "canceled"
