-- Submit a batch of tasks. For each: idempotency check, task record, indexes, lifecycle event
-- and the Dramatiq enqueue (exactly what dramatiq/brokers/redis/dispatch.lua "enqueue" writes).
-- One call carries every submission the coordinator received while its previous call was in
-- flight, so a loaded coordinator pays one round trip (and one reply) for many requests.
--
-- Key names are built from the prefixes passed in (shared/keys.py owns them), as Dramatiq's
-- own script does; so this script is not Redis Cluster safe, like Dramatiq's broker.
-- ARGV: 1 task key prefix, 2 tasks:all, 3 status index prefix, 4 type index prefix,
--       5 idempotency key prefix, 6 events stream, 7 dramatiq namespace, 8 ttl (s),
--       9 events maxlen, then per task (TASK_ARGS = 12 items):
--       task id, created (µs), idempotency key suffix ("" when none), queue, type,
--       encoded message, priority, payload json, correlation id, submitted by,
--       idempotency key and request digest ("" when none).
-- The record's constant and derived fields (status, attempts, timestamps in ms, the Dramatiq
-- message id) are written here, so each submission sends only what varies.
-- Returns a flat array: per task 1 and its id when created (or created by an earlier send of
-- the same call, so a retry after a lost reply is safe), 0 and the first task's id when its
-- idempotency key was seen before.
local task_prefix, all_index, status_prefix, type_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local idem_prefix, events, namespace = ARGV[5], ARGV[6], ARGV[7]
local ttl, maxlen = tonumber(ARGV[8]), ARGV[9]
local queued_index = status_prefix .. "queued"
local out = {}
local i = 10
while i <= #ARGV do
    local task_id, created, idem, queue = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local task_type, message = ARGV[i + 4], ARGV[i + 5]
    local at = i + 6
    i = i + 12
    local existing = false
    local task_key = task_prefix .. task_id
    if redis.call("exists", task_key) == 1 then
        -- the same submission sent again (a retry after a lost reply): it is already recorded
        existing = task_id
    elseif idem ~= "" then
        existing = redis.call("get", idem_prefix .. idem)
        if not existing then
            redis.call("set", idem_prefix .. idem, task_id, "EX", ttl)
        end
    end
    if existing == task_id then
        out[#out + 1] = 1
        out[#out + 1] = task_id
    elseif existing then
        out[#out + 1] = 0
        out[#out + 1] = existing
    else
        local ts = string.format("%d", math.floor(tonumber(created) / 1000))
        redis.call("hset", task_key, "id", task_id, "type", task_type, "queue", queue,
            "priority", ARGV[at], "status", "queued", "payload", ARGV[at + 1], "attempts", 0,
            "correlation_id", ARGV[at + 2], "submitted_by", ARGV[at + 3], "redis_message_id", task_id,
            "created_us", created, "created_at", ts, "updated_at", ts)
        if ARGV[at + 4] ~= "" then
            redis.call("hset", task_key, "idempotency_key", ARGV[at + 4], "digest", ARGV[at + 5])
        end
        redis.call("expire", task_key, ttl)
        redis.call("zadd", all_index, created, task_id)
        redis.call("zadd", queued_index, created, task_id)
        redis.call("zadd", type_prefix .. task_type, created, task_id)
        redis.call("xadd", events, "MAXLEN", "~", maxlen, "*",
            "id", task_id, "type", task_type, "status", "queued", "ts", ts)
        -- the Dramatiq message id in Redis is the task id on first enqueue (unique, as required)
        redis.call("hset", namespace .. ":" .. queue .. ".msgs", task_id, message)
        redis.call("rpush", namespace .. ":" .. queue, task_id)
        out[#out + 1] = 1
        out[#out + 1] = task_id
    end
end
return out
