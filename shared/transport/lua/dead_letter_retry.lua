-- Move one dead-lettered Dramatiq message back onto its queue and start a new attempt series
-- for its task: the record becomes queued (attempts keep counting), its retry round is reset
-- (the message's own retry count is reset by the caller), and the timeline says who asked.
--
-- The dead letter is keyed by its Redis message id, which is new on every enqueue (Dramatiq's
-- retries re-enqueue), so the task id comes from the message itself (its ``message_id``).
--
-- Refuses, changing nothing, when the task has since ended otherwise or is already queued or
-- running again (the worker would skip the message): returns the task's status. Does nothing
-- (returns 0) when the message is no longer dead-lettered, so two operators retrying the same
-- message enqueue it once.
--
-- KEYS: 1 dead-letter zset (.XQ), 2 dead-letter messages hash (.XQ.msgs), 3 queue list,
--       4 queue messages hash (.msgs), 5 task events stream
-- ARGV: 1 Redis message id, 2 message data (retries reset), 3 task key prefix,
--       4 status index prefix, 5 now (ms), 6 events maxlen, 7 task id, 8 who asked,
--       9 wake-up channel ("" or absent: none), 10 the queue's name (published on it, so an
--       idle consumer fetches it now)
-- Returns 1 when the message was moved, 0 when it was not dead-lettered, else the task's status.
local id = ARGV[1]
if redis.call("zscore", KEYS[1], id) == false then
    return 0
end
local task_id = ARGV[7]
local task = ARGV[3] .. task_id
local info = redis.call("hmget", task, "status", "created_us", "type")
local status = info[1]
if status and status ~= "dead" and status ~= "failed" then
    return status
end
redis.call("zrem", KEYS[1], id)
redis.call("hdel", KEYS[2], id)
redis.call("hset", KEYS[4], id, ARGV[2])
redis.call("rpush", KEYS[3], id)
if status then
    redis.call("zrem", ARGV[4] .. status, task_id)
    redis.call("zadd", ARGV[4] .. "queued", info[2] or 0, task_id)
    redis.call("hset", task, "status", "queued", "updated_at", ARGV[5])
    redis.call("hdel", task, "finished_at", "round")
    redis.call("xadd", KEYS[5], "MAXLEN", "~", ARGV[6], "*",
        "id", task_id, "type", info[3] or "", "status", "queued", "ts", ARGV[5], "worker", "dashboard",
        "by", ARGV[8], "note", "dead letter retried")
end
if ARGV[9] and ARGV[9] ~= "" then
    redis.call("publish", ARGV[9], ARGV[10])
end
return 1
