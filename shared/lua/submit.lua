-- Submit a batch of tasks. For each: idempotency check, task record, indexes, lifecycle event
-- and the Dramatiq enqueue (exactly what Dramatiq's Redis broker writes for "enqueue"; the
-- transport's contract test, shared/transport/contract.py, keeps the two equal).
-- One call carries every submission the coordinator received while its previous call was in
-- flight, so a loaded coordinator pays one round trip (and one reply) for many requests.
--
-- Key names are built from the prefixes passed in (shared/keys.py owns them), as Dramatiq's
-- own script does; so this script is not Redis Cluster safe, like Dramatiq's broker.
-- ARGV: 1 task key prefix, 2 tasks:all, 3 status index prefix, 4 type index prefix,
--       5 old-form idempotency key prefix, 6 events stream, 7 dramatiq namespace, 8 ttl (s),
--       9 events maxlen, 10 wake-up channel, 11 µs per token of the submit rate limit ("0":
--       off), 12 its burst * µs per token, 13 the outbox stream ("" with the Redis broker: the
--       message goes straight onto its Dramatiq queue), 14 the id index (tasks:ids, every id at
--       score 0 for prefix lookups by ZRANGEBYLEX), then per task (14 items,
--       SUBMIT_TASK_ARGS in taskstore.py):
--       task id, created (µs), idempotency key name ("" when none), queue, type, priority,
--       payload json, correlation id, submitted by, idempotency key and request digest ("" when
--       none), rate-limit bucket key ("" when the submission is not limited), W3C traceparent
--       and tracestate of the request's span ("" when none: shared/tracing.py).
-- The record's constant and derived fields (status, attempts, timestamps in ms, the Dramatiq
-- message id) and the Dramatiq message itself are written here, so each submission sends only
-- what varies. The message is the JSON dramatiq.Message.encode writes, put together from its
-- parts: the task id, queue, type and priority are plain names (shared/tasks.py checks them),
-- the payload is JSON already, and the correlation id goes through cjson.encode. A trace context
-- goes into the message's options (the worker's span continues it) and, when sampled, the trace
-- id into the record (trace_id).
-- Returns a flat array: per task 1 and its id when created (or created by an earlier send of
-- the same call, so a retry after a lost reply is safe), 0 and the first task's id when its
-- idempotency key was seen before for the same request (same digest), -1 and that id when the
-- key was used for a different request, -2 and the wait in ms when its subject's bucket is
-- empty (rate limited: nothing recorded, no idempotency key set).
-- The bucket is checked after the task-id check (a batch sent again is not charged twice, nor
-- refused for what its first send spent) and before the idempotency key is looked up or set
-- (a replay is a request like any other; a refused submission leaves no key behind).
-- Once per queue that got a message, the queue's name is published on the wake-up channel, so
-- idle consumers (which block on it instead of polling) fetch it at once.
-- With RabbitMQ as the broker the message goes into the outbox stream instead (fields q and m),
-- in the same atomic call; a relay publishes it (shared/transport/outbox.py).
--! include ratelimit_lib

local task_prefix, all_index, status_prefix, type_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local legacy_prefix, events, namespace = ARGV[5], ARGV[6], ARGV[7]
local ttl, maxlen, wake_channel = tonumber(ARGV[8]), ARGV[9], ARGV[10]
local rl_interval, rl_limit = tonumber(ARGV[11]), tonumber(ARGV[12])
local outbox, ids_index = ARGV[13], ARGV[14]
local rl_now = false
local queued_index = status_prefix .. "queued"
local out = {}
local woken = {}
local i = 15
while i <= #ARGV do
    local task_id, created, idem, queue = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local task_type, priority, payload = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
    local at = i + 7
    local bucket = ARGV[i + 11]
    local traceparent, tracestate = ARGV[i + 12], ARGV[i + 13]
    i = i + 14
    local existing = false
    local wait = 0
    local task_key = task_prefix .. task_id
    if redis.call("exists", task_key) == 1 then
        -- the same submission sent again (a retry after a lost reply): it is already recorded
        existing = task_id
    else
        if bucket ~= "" and rl_interval > 0 then
            if not rl_now then
                rl_now = rate_limit_now()  -- one clock read per batch
            end
            wait = rate_limit_take(bucket, rl_interval, rl_limit, rl_now)
        end
        if wait == 0 and idem ~= "" then
            existing = redis.call("get", idem)
            if not existing then
                -- An old-form key (legacy prefix .. subject .. ":" .. key, written before the names
                -- were length-prefixed) is ambiguous: "alice" + "x:K" and "alice:x" + "K" share it.
                -- So it counts only when its task was submitted by this subject with this key (the
                -- record says so, and lives as long as the key); any other owner's is left alone,
                -- never overwritten, and this pair gets a key of its own in the new form. Drop
                -- this lookup once TASK_TTL has passed since the upgrade: no old key is left.
                local subject, key = ARGV[at + 1], ARGV[at + 2]
                local old = redis.call("get", legacy_prefix .. subject .. ":" .. key)
                if old then
                    local owner = redis.call("hmget", task_prefix .. old, "submitted_by", "idempotency_key")
                    if owner[1] == subject and owner[2] == key then
                        existing = old
                    end
                end
            end
            if not existing then
                redis.call("set", idem, task_id, "EX", ttl)
            end
        end
    end
    if wait > 0 then
        out[#out + 1] = -2
        out[#out + 1] = wait
    elseif existing == task_id then
        out[#out + 1] = 1
        out[#out + 1] = task_id
    elseif existing then
        local digest = redis.call("hget", task_prefix .. existing, "digest")
        out[#out + 1] = (digest and digest ~= ARGV[at + 3]) and -1 or 0
        out[#out + 1] = existing
    else
        local cid = ARGV[at]
        local ms = string.format("%d", math.floor(tonumber(created) / 1000))
        redis.call("hset", task_key, "id", task_id, "type", task_type, "queue", queue,
            "priority", priority, "status", "queued", "payload", payload, "attempts", 0,
            "correlation_id", cid, "submitted_by", ARGV[at + 1], "redis_message_id", task_id,
            "created_us", created, "created_at", ms, "updated_at", ms)
        if ARGV[at + 2] ~= "" then
            redis.call("hset", task_key, "idempotency_key", ARGV[at + 2], "digest", ARGV[at + 3])
        end
        local trace_options = ""
        if traceparent ~= "" then
            -- "00-<trace id: 32 hex>-<span id: 16 hex>-<flags: 2 hex>"; bit 0 of the flags: sampled
            if tonumber(string.sub(traceparent, 54, 55), 16) % 2 == 1 then
                redis.call("hset", task_key, "trace_id", string.sub(traceparent, 4, 35))
            end
            trace_options = ',"traceparent":' .. cjson.encode(traceparent)
            if tracestate ~= "" then
                trace_options = trace_options .. ',"tracestate":' .. cjson.encode(tracestate)
            end
        end
        redis.call("expire", task_key, ttl)
        redis.call("zadd", all_index, created, task_id)
        redis.call("zadd", ids_index, 0, task_id)
        redis.call("zadd", queued_index, created, task_id)
        redis.call("zadd", type_prefix .. task_type, created, task_id)
        redis.call("xadd", events, "MAXLEN", "~", maxlen, "*",
            "id", task_id, "type", task_type, "status", "queued", "ts", ms)
        local message = '{"queue_name":"' .. queue .. '","actor_name":"' .. task_type
            .. '","args":[' .. payload .. '],"kwargs":{},"options":{"redis_message_id":"' .. task_id
            .. '","correlation_id":' .. cjson.encode(cid) .. ',"priority":"' .. priority .. '"'
            .. trace_options .. '},"message_id":"' .. task_id .. '","message_timestamp":' .. ms .. '}'
        if outbox ~= "" then
            redis.call("xadd", outbox, "*", "q", queue, "m", message)
        else
            -- the Dramatiq message id in Redis is the task id on first enqueue (unique, as required)
            redis.call("hset", namespace .. ":" .. queue .. ".msgs", task_id, message)
            redis.call("rpush", namespace .. ":" .. queue, task_id)
            woken[queue] = true
        end
        out[#out + 1] = 1
        out[#out + 1] = task_id
    end
end
for queue in pairs(woken) do
    redis.call("publish", wake_channel, queue)
end
return out
