-- Move one dead-lettered Dramatiq message back onto its queue and mark its task record queued.
-- Does nothing (returns 0) when the message is no longer dead-lettered, so two operators
-- retrying the same message enqueue it once.
--
-- KEYS: 1 dead-letter zset (.XQ), 2 dead-letter messages hash (.XQ.msgs), 3 queue list,
--       4 queue messages hash (.msgs), 5 task events stream
-- ARGV: 1 message id, 2 message data (retries reset), 3 task key prefix, 4 status index prefix,
--       5 now (ms), 6 events maxlen
-- Returns 1 when the message was moved, else 0.
local id = ARGV[1]
if redis.call("zrem", KEYS[1], id) == 0 then
    return 0
end
redis.call("hdel", KEYS[2], id)
redis.call("hset", KEYS[4], id, ARGV[2])
redis.call("rpush", KEYS[3], id)
local task = ARGV[3] .. id
local info = redis.call("hmget", task, "status", "created_us", "type")
if info[1] then
    redis.call("zrem", ARGV[4] .. info[1], id)
    redis.call("zadd", ARGV[4] .. "queued", info[2] or 0, id)
    redis.call("hset", task, "status", "queued", "updated_at", ARGV[5])
    redis.call("hdel", task, "finished_at")
    redis.call("xadd", KEYS[5], "MAXLEN", "~", ARGV[6], "*",
        "id", id, "type", info[3] or "", "status", "queued", "ts", ARGV[5], "worker", "dashboard")
end
return 1
