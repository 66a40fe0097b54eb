-- Free a deploy's service: delete the active pointer only if it still names this deploy.
--
-- KEYS: 1 active pointer
-- ARGV: 1 id
-- Returns 1 when the pointer was deleted, else 0.
if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end
return 0
