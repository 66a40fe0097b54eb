-- Drop up to ARGV[1] ready messages of one Dramatiq queue; their queued task records become
-- canceled (messages already fetched by a worker are not touched).
--
-- KEYS: 1 queue list, 2 queue messages hash (.msgs), 3 task events stream
-- ARGV: 1 batch size, 2 task key prefix, 3 status index prefix, 4 now (ms), 5 events maxlen
-- Returns the number of messages dropped (0 when the queue is empty).
local dropped = 0
for _ = 1, tonumber(ARGV[1]) do
    local id = redis.call("lpop", KEYS[1])
    if not id then
        break
    end
    dropped = dropped + 1
    redis.call("hdel", KEYS[2], id)
    local task = ARGV[2] .. id
    local info = redis.call("hmget", task, "status", "created_us", "type")
    if info[1] == "queued" then
        redis.call("zrem", ARGV[3] .. "queued", id)
        redis.call("zadd", ARGV[3] .. "canceled", info[2] or 0, id)
        redis.call("hset", task, "status", "canceled", "updated_at", ARGV[4], "finished_at", ARGV[4],
            "error", "purged from its queue by an operator")
        redis.call("xadd", KEYS[3], "MAXLEN", "~", ARGV[5], "*",
            "id", id, "type", info[3] or "", "status", "canceled", "ts", ARGV[4], "worker", "dashboard")
    end
end
return dropped
