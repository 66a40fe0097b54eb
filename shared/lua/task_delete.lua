-- Delete finished task records (an operator's "delete" or "clean by age"): the hash, and the id
-- from every index (all, ids, its status, its type). A task that has not finished (queued,
-- running, retrying) is left alone: its message is still with the broker and the worker would
-- recreate a record without its history.
--
-- KEYS: 1 tasks:all, 2 tasks:ids
-- ARGV: 1 task key prefix, 2 status index prefix, 3 type index prefix, 4.. task ids
-- Returns one entry per task id: 1 deleted, "" unknown (or expired), else its status (kept).
local out = {}
for i = 4, #ARGV do
    local task_id = ARGV[i]
    local task = ARGV[1] .. task_id
    local info = redis.call("hmget", task, "status", "type")
    local status = info[1]
    if not status then
        out[#out + 1] = ""
    elseif status == "succeeded" or status == "failed" or status == "dead" or status == "canceled" then
        redis.call("del", task)
        redis.call("zrem", KEYS[1], task_id)
        redis.call("zrem", KEYS[2], task_id)
        redis.call("zrem", ARGV[2] .. status, task_id)
        if info[2] then
            redis.call("zrem", ARGV[3] .. info[2], task_id)
        end
        out[#out + 1] = 1
    else
        out[#out + 1] = status
    end
end
return out
