-- Move the parked long delays whose time has come into the outbox (RabbitMQ transport; see
-- shared/transport/rabbitmq.py LongDelays and shared/transport/outbox.py), atomically: an entry
-- is either still parked or in the outbox, never both, never neither.
-- KEYS: 1 parked delays (sorted set, score = ms when it may be published), 2 outbox stream.
-- ARGV: 1 now + the hold limit (ms), 2 most entries moved per call.
-- Returns how many entries were moved.
local due = redis.call("zrangebyscore", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[2]))
for _, raw in ipairs(due) do
    local entry = cjson.decode(raw)
    redis.call("xadd", KEYS[2], "*", "q", entry.q, "m", entry.m)
    redis.call("zrem", KEYS[1], raw)
end
return #due
