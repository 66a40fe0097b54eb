-- One rate-limit check (the route classes other than POST /api/v1/tasks, whose check runs inside
-- submit.lua's batch): take a token of one subject's bucket of one route class.
-- KEYS: 1 the bucket (shared.keys.Keys.rate_limit)
-- ARGV: 1 µs per token, 2 burst * µs per token
-- Returns 0 when the request may go on, else the wait in ms until a token is there.
--! include ratelimit_lib

return rate_limit_take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), rate_limit_now())
