-- Submit a task: idempotency check, task record, indexes, lifecycle event and the Dramatiq
-- enqueue (exactly what dramatiq/brokers/redis/dispatch.lua "enqueue" writes), atomically.
--
-- KEYS: 1 task hash, 2 idempotency key ("" when none), 3 tasks:all, 4 tasks:status:queued,
--       5 tasks:type:<type>, 6 events stream, 7 dramatiq queue list, 8 dramatiq queue msgs hash
-- ARGV: 1 task id, 2 created (µs), 3 ttl (s), 4 events maxlen, 5 redis message id,
--       6 encoded message, 7 type, 8 now (ms), 9.. field/value pairs of the record
-- Returns {1, task id} when created, {0, existing id} when the idempotency key was seen.
local task_id = ARGV[1]
local ttl = tonumber(ARGV[3])

if KEYS[2] ~= "" then
    local existing = redis.call("get", KEYS[2])
    if existing then
        return {0, existing}
    end
    redis.call("set", KEYS[2], task_id, "EX", ttl)
end

local fields = {}
for i = 9, #ARGV do
    fields[#fields + 1] = ARGV[i]
end
redis.call("hset", KEYS[1], unpack(fields))
redis.call("expire", KEYS[1], ttl)
redis.call("zadd", KEYS[3], ARGV[2], task_id)
redis.call("zadd", KEYS[4], ARGV[2], task_id)
redis.call("zadd", KEYS[5], ARGV[2], task_id)
redis.call("xadd", KEYS[6], "MAXLEN", "~", ARGV[4], "*",
    "id", task_id, "type", ARGV[7], "status", "queued", "ts", ARGV[8])
redis.call("hset", KEYS[8], ARGV[5], ARGV[6])
redis.call("rpush", KEYS[7], ARGV[5])
return {1, task_id}
