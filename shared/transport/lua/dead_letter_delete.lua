-- Delete dead letters of one Dramatiq queue (an operator's "delete"): each message leaves the
-- dead-letter set and its hash. The task records stay as they are (dead or failed, until their
-- TTL); a deleted dead letter can no longer be retried from the queue page (the task page's
-- retry submits the task again).
--
-- KEYS: 1 dead-letter zset (.XQ), 2 dead-letter messages hash (.XQ.msgs)
-- ARGV: the Redis message ids to delete
-- Returns how many were dead-lettered (and are deleted now).
local deleted = 0
for i = 1, #ARGV do
    if redis.call("zrem", KEYS[1], ARGV[i]) == 1 then
        deleted = deleted + 1
    end
    redis.call("hdel", KEYS[2], ARGV[i])
end
return deleted
