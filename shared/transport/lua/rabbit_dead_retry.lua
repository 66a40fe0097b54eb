-- Retry one dead (or failed) task on the RabbitMQ transport (shared/transport/rabbit_admin.py):
-- the record becomes queued as a new attempt series (attempts keep counting, its retry round is
-- dropped, the timeline says who asked), exactly as dead_letter_retry.lua does for Redis, AND
-- the task's Dramatiq message, rebuilt from the record exactly as shared/lua/submit.lua builds
-- it (message_id = task id, no retry count: a fresh retry budget), goes into the outbox stream
-- for the relay to publish (shared/transport/outbox.py), atomically.
--
-- RabbitMQ's own copy in the queue's .XQ cannot be taken out without consuming the whole .XQ;
-- it stays there until its TTL. The retried task runs from the outbox's copy.
--
-- Refuses, changing nothing, when the task is not dead or failed (it has since run again, or
-- is queued already: a second operator's retry): returns the task's status.
--
-- KEYS: 1 task hash, 2 task events stream, 3 outbox stream
-- ARGV: 1 task id, 2 queue, 3 status index prefix, 4 now (ms), 5 events maxlen, 6 who asked
-- Returns 1 when requeued, 0 when there is no record of that task on that queue (expired, or
-- another queue's), else the task's status.
local task_id = ARGV[1]
local info = redis.call("hmget", KEYS[1], "status", "queue", "type", "priority", "payload",
    "correlation_id", "created_us", "created_at")
local status, queue, task_type, payload = info[1], info[2], info[3], info[5]
if not status or queue ~= ARGV[2] or not task_type or not payload then
    return 0
end
if status ~= "dead" and status ~= "failed" then
    return status
end
local created_us = info[7] or "0"
local ms = info[8] or string.format("%d", math.floor(tonumber(created_us) / 1000))
-- the same bytes submit.lua writes for this task (see its header)
local message = '{"queue_name":"' .. queue .. '","actor_name":"' .. task_type
    .. '","args":[' .. payload .. '],"kwargs":{},"options":{"redis_message_id":"' .. task_id
    .. '","correlation_id":' .. cjson.encode(info[6] or "") .. ',"priority":"' .. (info[4] or "")
    .. '"},"message_id":"' .. task_id .. '","message_timestamp":' .. ms .. '}'
redis.call("zrem", ARGV[3] .. status, task_id)
redis.call("zadd", ARGV[3] .. "queued", created_us, task_id)
redis.call("hset", KEYS[1], "status", "queued", "updated_at", ARGV[4])
redis.call("hdel", KEYS[1], "finished_at", "round")
redis.call("xadd", KEYS[2], "MAXLEN", "~", ARGV[5], "*",
    "id", task_id, "type", task_type, "status", "queued", "ts", ARGV[4], "worker", "dashboard",
    "by", ARGV[6], "note", "dead letter retried")
redis.call("xadd", KEYS[3], "*", "q", queue, "m", message)
return 1
