-- A worker ends an attempt: running → succeeded | failed | retrying | dead.
-- Counters move only on the first end of a running attempt, so a redelivery never counts twice:
-- "processed" counts every ended attempt, "failed" those that ended in an error (as Sidekiq).
--
-- When asked to, it also acks the Dramatiq message (what dispatch.lua "ack" does), so the final
-- status and the ack are one atomic step and one round trip.
--
-- The same call sent again after a lost reply (a connection reset) finds its attempt already
-- ended (ARGV[13] = the attempt id start.lua recorded) and only acks: an end is recorded once.
--
-- KEYS: 1 task hash, 2 events stream, 3 process counters hash, 4 the broker's ack set for the
--       queue ("" = do not ack), 5 the queue's message hash
-- ARGV: 1 task id, 2 new status, 3 now (ms), 4 ttl (s), 5 events maxlen, 6 status index prefix,
--       7 worker id, 8 "1" when the attempt ended in an error, else "0", 9 type,
--       10 attempt duration (ms, "" when unknown), 11 per-minute rollup key prefix,
--       12 redis message id to ack, 13 attempt id ("" when unknown),
--       14.. field/value pairs (result, error, traceback, ...)
local task_id = ARGV[1]
local new_status = ARGV[2]
local status = redis.call("hget", KEYS[1], "status")

local function ack()
    if KEYS[4] ~= "" and redis.call("srem", KEYS[4], ARGV[12]) > 0 then
        redis.call("hdel", KEYS[5], ARGV[12])
    end
end

if ARGV[13] ~= "" and redis.call("hget", KEYS[1], "ended_attempt") == ARGV[13] then
    ack()  -- this attempt's end, sent again: recorded already
    return status or ""
end
local created = redis.call("hget", KEYS[1], "created_us") or ARGV[3] .. "000"

if status then
    redis.call("zrem", ARGV[6] .. status, task_id)
end
redis.call("zadd", ARGV[6] .. new_status, created, task_id)
local fields = {"status", new_status, "updated_at", ARGV[3], "ended_attempt", ARGV[13]}
if new_status ~= "retrying" then
    fields[#fields + 1] = "finished_at"
    fields[#fields + 1] = ARGV[3]
end
for i = 14, #ARGV do
    fields[#fields + 1] = ARGV[i]
end
redis.call("hset", KEYS[1], unpack(fields))
redis.call("expire", KEYS[1], ARGV[4])
redis.call("xadd", KEYS[2], "MAXLEN", "~", ARGV[5], "*",
    "id", task_id, "type", ARGV[9], "status", new_status, "ts", ARGV[3], "worker", ARGV[7])
if status == "running" then
    redis.call("hincrby", KEYS[3], "in_flight", -1)
    redis.call("hincrby", KEYS[3], "processed", 1)
    -- the per-minute rollup behind the dashboard's history (kept 8 days)
    local rollup = ARGV[11] .. math.floor(tonumber(ARGV[3]) / 60000)
    redis.call("hincrby", rollup, "processed", 1)
    redis.call("hincrby", rollup, "processed:" .. ARGV[9], 1)
    if ARGV[8] == "1" then
        redis.call("hincrby", KEYS[3], "failed", 1)
        redis.call("hincrby", rollup, "failed", 1)
        redis.call("hincrby", rollup, "failed:" .. ARGV[9], 1)
    end
    if new_status == "retrying" then
        redis.call("hincrby", rollup, "retried", 1)
    end
    if ARGV[10] ~= "" then
        redis.call("hincrbyfloat", rollup, "duration_ms_sum", ARGV[10])
        redis.call("hincrby", rollup, "duration_count", 1)
    end
    redis.call("expire", rollup, 8 * 86400)
end
ack()
return status or ""
