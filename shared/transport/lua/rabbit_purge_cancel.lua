-- The records of messages a RabbitMQ purge took off their queue (shared/transport/rabbit_admin.py
-- gets them with basic.get and acks them once this script has run): each queued task becomes
-- canceled exactly as queue_purge.lua does it for the Redis broker (a task in another status is
-- left alone: it was not waiting for that message).
--
-- KEYS: 1 task events stream
-- ARGV: 1 task key prefix, 2 status index prefix, 3 now (ms), 4 events maxlen, 5.. task ids
-- Returns how many records became canceled.
--! include purge_lib
local canceled = 0
for i = 5, #ARGV do
    if cancel_purged(ARGV[1], ARGV[2], ARGV[i], ARGV[3], KEYS[1], ARGV[4]) then
        canceled = canceled + 1
    end
end
return canceled
