-- A worker starts an attempt: queued|retrying|running → running (attempts + 1), and takes the
-- attempt's lease. Returns "ok", or why the delivery must not run:
--   "canceled", "succeeded", "failed", "dead" — the task ended (an earlier delivery whose ack
--       was lost, or a copy delivered twice);
--   "stale" — the message is a copy of a retry round that already ran (the round is the
--       message's Dramatiq ``retries`` count; a copy of an ended round must not run it again);
--   "leased <ms>" — another attempt of the task is running and its process still renews its
--       lease (it stalled past BROKER_HEARTBEAT_TIMEOUT, so Dramatiq's maintenance redelivered
--       its message): the caller defers this delivery by <ms>, the lease's remaining life.
-- A running attempt whose lease expired (its process died or froze past the lease) is taken
-- over: the new attempt becomes current, and the old one's end will count as a duplicate.
--
-- The worker names each attempt (ARGV[13], random): the same call sent again after a lost reply
-- (a connection reset) finds its own attempt running and changes nothing, so attempts, events
-- and in-flight counts move once per attempt.
--
-- KEYS: 1 task hash, 2 tasks:all, 3 tasks:type:<type>, 4 events stream, 5 process counters hash,
--       6 the task's lease, 7 the process's lease set
-- ARGV: 1 task id, 2 now (ms), 3 worker id, 4 ttl (s), 5 events maxlen, 6 status index prefix,
--       7 fallback created (µs), 8 type, 9 queue, 10 priority, 11 payload json, 12 correlation id,
--       13 attempt id, 14 lease ttl (ms), 15 the message's retry round
local status = redis.call("hget", KEYS[1], "status")
if status == "canceled" or status == "succeeded" or status == "failed" or status == "dead" then
    return status
end
if status == "running" and redis.call("hget", KEYS[1], "attempt_id") == ARGV[13] then
    return "ok"  -- this attempt's start, sent again
end
local round = tonumber(ARGV[15])
local last_round = tonumber(redis.call("hget", KEYS[1], "round") or "-1")
if round < last_round or (round == last_round and status == "retrying") then
    return "stale"
end
if status == "running" then
    local remaining = redis.call("pttl", KEYS[6])
    if remaining > 0 then
        return "leased " .. remaining
    end
end

local task_id = ARGV[1]
local created = redis.call("hget", KEYS[1], "created_us")
if not created then
    -- Enqueued without the coordinator (e.g. actor.send) or expired: create the record.
    created = ARGV[7]
    redis.call("hset", KEYS[1], "id", task_id, "type", ARGV[8], "queue", ARGV[9],
        "priority", ARGV[10], "payload", ARGV[11], "correlation_id", ARGV[12],
        "created_us", created, "created_at", math.floor(tonumber(created) / 1000))
    redis.call("zadd", KEYS[2], created, task_id)
    redis.call("zadd", KEYS[3], created, task_id)
end
if status then
    redis.call("zrem", ARGV[6] .. status, task_id)
end
redis.call("zadd", ARGV[6] .. "running", created, task_id)
redis.call("hset", KEYS[1], "status", "running", "worker", ARGV[3], "started_at", ARGV[2],
    "updated_at", ARGV[2], "attempt_id", ARGV[13], "round", ARGV[15])
redis.call("hincrby", KEYS[1], "attempts", 1)
redis.call("expire", KEYS[1], ARGV[4])
redis.call("set", KEYS[6], ARGV[3] .. " " .. ARGV[13], "PX", ARGV[14])
redis.call("sadd", KEYS[7], task_id)
redis.call("xadd", KEYS[4], "MAXLEN", "~", ARGV[5], "*",
    "id", task_id, "type", ARGV[8], "status", "running", "ts", ARGV[2], "worker", ARGV[3])
redis.call("hincrby", KEYS[5], "in_flight", 1)
return "ok"
