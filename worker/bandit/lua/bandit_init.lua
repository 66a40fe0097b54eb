-- Create the shared LinUCB state unless it exists (first process wins; the rest keep its state).
-- KEYS: 1 state hash
-- ARGV: field, value, field, value, ... (must include "dim")
-- Returns 1 when created, 0 when it already existed.
if redis.call("hexists", KEYS[1], "dim") == 1 then
    return 0
end
redis.call("hset", KEYS[1], unpack(ARGV))
return 1
