-- The records of messages a RabbitMQ purge took off their queue (shared/transport/rabbit_admin.py
-- gets them with basic.get and acks them once this script has run): each queued task becomes
-- canceled exactly as queue_purge.lua does it for the Redis broker (a task in another status is
-- left alone: it was not waiting for that message).
--
-- KEYS: 1 task events stream
-- ARGV: 1 task key prefix, 2 status index prefix, 3 now (ms), 4 events maxlen, 5.. task ids
-- Returns how many records became canceled.
local canceled = 0
for i = 5, #ARGV do
    local id = ARGV[i]
    local task = ARGV[1] .. id
    local info = redis.call("hmget", task, "status", "created_us", "type")
    if info[1] == "queued" then
        canceled = canceled + 1
        redis.call("zrem", ARGV[2] .. "queued", id)
        redis.call("zadd", ARGV[2] .. "canceled", info[2] or 0, id)
        redis.call("hset", task, "status", "canceled", "updated_at", ARGV[3], "finished_at", ARGV[3],
            "error", "purged from its queue by an operator")
        redis.call("xadd", KEYS[1], "MAXLEN", "~", ARGV[4], "*",
            "id", id, "type", info[3] or "", "status", "canceled", "ts", ARGV[3], "worker", "dashboard")
    end
end
return canceled
