-- Issue a control command to a worker agent: idempotency check, the command record (status
-- "pending"), the agent's desired state, its command stream and the audit stream, atomically.
--
-- KEYS: 1 command hash, 2 idempotency key ("" when none), 3 desired-state hash,
--       4 the agent's command stream, 5 audit stream, 6 audit outcomes hash
-- ARGV: 1 command id, 2 ttl (s), 3 desired state ("" = unchanged), 4 processes ("" = unchanged),
--       5 command json, 6 audit cap, 7.. field/value pairs of the command record
-- The audit log gets one entry (status pending); the agent's replies update its outcome in place.
-- Returns {1, id} when issued, {0, first id} when the idempotency key was used before.
-- The command id is new for every request, so a call sent again after a lost reply (redis-py
-- retries once on a dead connection) finds its command recorded and issues nothing twice.
--! include audit_lib
if redis.call("exists", KEYS[1]) == 1 then
    return {1, ARGV[1]}
end
if KEYS[2] ~= "" then
    local existing = redis.call("get", KEYS[2])
    if existing then
        return {0, existing}
    end
    redis.call("set", KEYS[2], ARGV[1], "EX", ARGV[2])
end
local fields = {}
for i = 7, #ARGV do
    fields[#fields + 1] = ARGV[i]
end
redis.call("hset", KEYS[1], unpack(fields))
redis.call("expire", KEYS[1], ARGV[2])
if ARGV[3] ~= "" then
    redis.call("hset", KEYS[3], "state", ARGV[3])
end
if ARGV[4] ~= "" then
    redis.call("hset", KEYS[3], "processes", ARGV[4])
end
redis.call("xadd", KEYS[4], "MAXLEN", "~", 1000, "*", "command", ARGV[5])
audit_append(KEYS[5], KEYS[6], tonumber(ARGV[6]), ARGV[1], "command", ARGV[5], "status", "pending")
return {1, ARGV[1]}
