-- Add a deploy record and claim its service (one active deploy per service). With `exclusive` a
-- busy service is a conflict (the API's 409); without it the deploy is recorded as queued behind
-- the active one (the task path) and claims the service later with deploy_claim.lua. A pointer to
-- a deploy that has ended or vanished is taken over.
--
-- KEYS: 1 deploy hash, 2 deploys:all, 3 deploys:service:<s>, 4 active pointer
-- ARGV: 1 id, 2 created (ms), 3 exclusive "1"|"0", 4 deploy key prefix, 5.. field, value, ...
-- Returns {"created", active id} | {"exists", status} | {"conflict", active id}.
--! include deploy_lib
if redis.call("exists", KEYS[1]) == 1 then
    return {"exists", redis.call("hget", KEYS[1], "status")}
end
local active = redis.call("get", KEYS[4])
if active and active ~= ARGV[1] and is_active(ARGV[4], active) then
    if ARGV[3] == "1" then return {"conflict", active} end
else
    redis.call("set", KEYS[4], ARGV[1])
    active = ARGV[1]
end
redis.call("hset", KEYS[1], unpack(ARGV, 5))
redis.call("zadd", KEYS[2], ARGV[2], ARGV[1])
redis.call("zadd", KEYS[3], ARGV[2], ARGV[1])
return {"created", active}
