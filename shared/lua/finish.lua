-- A worker ends an attempt: running → succeeded | failed | retrying | dead, and drops the
-- attempt's lease. Counters move only on the first end of a running attempt, so a redelivery
-- never counts twice: "processed" counts every ended attempt, "failed" those that ended in an
-- error (as Sidekiq); "tasks" counts final ends (succeeded, failed, dead: not retrying) and
-- "tasks_failed" the failed and dead ones, so an error rate over tasks does not count a task
-- once per attempt; "lat:<i>" is the attempt-duration histogram (dashboard/latency_histogram.py).
--
-- The end of an attempt that is no longer current (another process took the task over after
-- this one's lease expired — it froze or stalled past it) or of a task that ended already is a
-- *duplicate execution*: it changes neither the status nor the result, adds a "duplicate" event
-- to the timeline, counts in the record's and the process's "duplicates", and returns
-- "duplicate". The record keeps exactly one end per attempt series.
--
-- When asked to, it also acks the Dramatiq message (what Dramatiq's "ack" does), so the final
-- status and the ack are one atomic step and one round trip; a duplicate is acked whatever asked.
--
-- The same call sent again after a lost reply (a connection reset) finds its attempt among the
-- ended ones (ARGV[13] = the attempt id start.lua recorded) and only acks: an end is recorded once.
--
-- KEYS: 1 task hash, 2 events stream, 3 process counters hash, 4 the broker's ack set for the
--       queue ("" = no ack set known), 5 the queue's message hash, 6 the task's lease,
--       7 the process's lease set
-- ARGV: 1 task id, 2 new status, 3 now (ms), 4 ttl (s), 5 events maxlen, 6 status index prefix,
--       7 worker id, 8 "1" when the attempt ended in an error, else "0", 9 type,
--       10 attempt duration (ms, "" when unknown), 11 per-minute rollup key prefix,
--       12 redis message id to ack, 13 attempt id ("" when unknown), 14 "1" to ack the message,
--       15.. field/value pairs (result, error, traceback, ...)
-- the latency buckets' upper bounds (ms): the same list as dashboard/latency_histogram.BUCKETS_MS
local LAT_BOUNDS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000}

local function lat_bucket(ms)
    for i, bound in ipairs(LAT_BOUNDS) do
        if ms <= bound then
            return i - 1
        end
    end
    return #LAT_BOUNDS
end
local task_id = ARGV[1]
local new_status = ARGV[2]
local attempt = ARGV[13]
local status = redis.call("hget", KEYS[1], "status")

local function ack(always)
    if KEYS[4] ~= "" and (always or ARGV[14] == "1") and redis.call("srem", KEYS[4], ARGV[12]) > 0 then
        redis.call("hdel", KEYS[5], ARGV[12])
    end
end

local function release()
    if redis.call("get", KEYS[6]) == ARGV[7] .. " " .. attempt then
        redis.call("del", KEYS[6])
    end
    redis.call("srem", KEYS[7], task_id)
end

if attempt ~= "" then
    local ended = redis.call("hget", KEYS[1], "ended_attempts") or ""
    if string.find(" " .. ended .. " ", " " .. attempt .. " ", 1, true)
            or redis.call("hget", KEYS[1], "ended_attempt") == attempt then  -- (records of 0.1)
        ack(false)  -- this attempt's end, sent again: recorded already
        return status or ""
    end
    local current = redis.call("hget", KEYS[1], "attempt_id")
    local ended_already = status == "succeeded" or status == "failed" or status == "dead"
        or status == "canceled"
    if ended_already or (current and current ~= attempt) then
        release()
        redis.call("hincrby", KEYS[1], "duplicates", 1)
        redis.call("hset", KEYS[1], "ended_attempts", string.sub(ended .. " " .. attempt, -400))
        redis.call("xadd", KEYS[2], "MAXLEN", "~", ARGV[5], "*",
            "id", task_id, "type", ARGV[9], "status", "duplicate", "ts", ARGV[3], "worker", ARGV[7],
            "note", "duplicate execution ended " .. new_status .. "; not recorded")
        redis.call("hincrby", KEYS[3], "in_flight", -1)
        redis.call("hincrby", KEYS[3], "duplicates", 1)
        ack(true)
        return "duplicate"
    end
end
local created = redis.call("hget", KEYS[1], "created_us") or ARGV[3] .. "000"

if status then
    redis.call("zrem", ARGV[6] .. status, task_id)
end
redis.call("zadd", ARGV[6] .. new_status, created, task_id)
local fields = {"status", new_status, "updated_at", ARGV[3], "ended_attempt", attempt}
if attempt ~= "" then
    local ended = redis.call("hget", KEYS[1], "ended_attempts") or ""
    fields[#fields + 1] = "ended_attempts"
    fields[#fields + 1] = string.sub(ended .. " " .. attempt, -400)  -- the last few attempts
end
if new_status ~= "retrying" then
    fields[#fields + 1] = "finished_at"
    fields[#fields + 1] = ARGV[3]
end
for i = 15, #ARGV do
    fields[#fields + 1] = ARGV[i]
end
redis.call("hset", KEYS[1], unpack(fields))
redis.call("expire", KEYS[1], ARGV[4])
release()
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
    else  -- the task's final outcome
        redis.call("hincrby", rollup, "tasks", 1)
        redis.call("hincrby", rollup, "tasks:" .. ARGV[9], 1)
        if ARGV[8] == "1" then
            redis.call("hincrby", rollup, "tasks_failed", 1)
            redis.call("hincrby", rollup, "tasks_failed:" .. ARGV[9], 1)
        end
    end
    if ARGV[10] ~= "" then
        redis.call("hincrbyfloat", rollup, "duration_ms_sum", ARGV[10])
        redis.call("hincrby", rollup, "duration_count", 1)
        local bucket = lat_bucket(tonumber(ARGV[10]))
        redis.call("hincrby", rollup, "lat:" .. bucket, 1)
        redis.call("hincrby", rollup, "lat:" .. ARGV[9] .. ":" .. bucket, 1)
    end
    redis.call("expire", rollup, 8 * 86400)
end
ack(false)
return status or ""
