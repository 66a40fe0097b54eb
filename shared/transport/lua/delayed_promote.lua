-- Run one delayed Dramatiq message now (an operator's "run now"): a copy without its ETA goes
-- onto the queue under a new Redis message id (as Dramatiq's worker enqueues a delayed message
-- when its ETA passes), and the task's timeline says who asked.
--
-- A message still waiting in the delay queue's list is taken out of it. One that a worker has
-- fetched already (Dramatiq holds fetched delayed messages in memory until their ETA) stays
-- where it is: when that worker enqueues it at its ETA, its copy belongs to a retry round that
-- has run by then, and the task store's start script refuses it ("stale", or the task's end),
-- so the task does not run twice.
--
-- Refuses, changing nothing, when the task has ended (canceled, succeeded, failed, dead) or runs
-- right now: returns the task's status. A message with no task record (an actor's own delayed
-- send) is promoted. Returns 0 when the message is no longer delayed.
--
-- KEYS: 1 delay queue list (.DQ), 2 delay queue messages hash (.DQ.msgs), 3 queue list,
--       4 queue messages hash (.msgs), 5 task events stream
-- ARGV: 1 Redis message id (in the delay queue), 2 new Redis message id, 3 the copy's data,
--       4 task key prefix, 5 now (ms), 6 events maxlen, 7 task id, 8 who asked,
--       9 wake-up channel ("" for none), 10 the queue's name (published on it)
-- Returns 1 (taken out of the delay queue), 2 (a worker holds it: a copy was enqueued), 0 (not
-- delayed any more), else the task's status.
local id = ARGV[1]
if redis.call("hexists", KEYS[2], id) == 0 then
    return 0
end
local task = ARGV[4] .. ARGV[7]
local info = redis.call("hmget", task, "status", "type")
local status = info[1]
if status and status ~= "queued" and status ~= "retrying" then
    return status
end
local moved = redis.call("lrem", KEYS[1], 1, id)
if moved > 0 then
    redis.call("hdel", KEYS[2], id)
end
redis.call("hset", KEYS[4], ARGV[2], ARGV[3])
redis.call("rpush", KEYS[3], ARGV[2])
if status then
    redis.call("xadd", KEYS[5], "MAXLEN", "~", ARGV[6], "*",
        "id", ARGV[7], "type", info[2] or "", "status", status, "ts", ARGV[5], "worker", "dashboard",
        "by", ARGV[8], "note", "delayed message run now")
end
if ARGV[9] ~= "" then
    redis.call("publish", ARGV[9], ARGV[10])
end
if moved > 0 then
    return 1
end
return 2
