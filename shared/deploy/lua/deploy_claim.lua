-- Make a deploy its service's active one, unless another deploy still holds the service (one
-- that has ended or vanished is taken over).
--
-- KEYS: 1 active pointer
-- ARGV: 1 id, 2 deploy key prefix
-- Returns the active id after the call.
--! include deploy_lib
local active = redis.call("get", KEYS[1])
if active and active ~= ARGV[1] and is_active(ARGV[2], active) then return active end
redis.call("set", KEYS[1], ARGV[1])
return ARGV[1]
