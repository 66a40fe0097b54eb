-- The agent drops the leases a dead Dramatiq process held (it was SIGKILLed or crashed), so their
-- messages run again as soon as Dramatiq's maintenance redelivers them instead of waiting for the
-- leases to expire. Only leases still naming that process are dropped.
--
-- KEYS: 1 the process's lease set
-- ARGV: 1 lease key prefix, 2 worker id (``<worker>/<pid>``)
-- Returns how many leases were dropped.
local dropped = 0
local prefix = ARGV[2] .. " "
for _, task_id in ipairs(redis.call("smembers", KEYS[1])) do
    local key = ARGV[1] .. task_id
    local holder = redis.call("get", key)
    if holder and string.sub(holder, 1, #prefix) == prefix then
        redis.call("del", key)
        dropped = dropped + 1
    end
end
redis.call("del", KEYS[1])
return dropped
