-- Drop up to ARGV[1] ready messages of one Dramatiq queue; their queued task records become
-- canceled (messages already fetched by a worker are not touched).
--
-- KEYS: 1 queue list, 2 queue messages hash (.msgs), 3 task events stream
-- ARGV: 1 batch size, 2 task key prefix, 3 status index prefix, 4 now (ms), 5 events maxlen
-- Returns the number of messages dropped (0 when the queue is empty).
--! include purge_lib
local dropped = 0
for _ = 1, tonumber(ARGV[1]) do
    local id = redis.call("lpop", KEYS[1])
    if not id then
        break
    end
    dropped = dropped + 1
    redis.call("hdel", KEYS[2], id)
    cancel_purged(ARGV[2], ARGV[3], id, ARGV[4], KEYS[3], ARGV[5])
end
return dropped
