-- Replace one arm's [A⁻¹ | θ] by the one a client recomputed from [A | b], unless the arm was
-- updated since the client read it (compare-and-set on the arm's update count) or the model was
-- rolled back since (the state's `epoch`: a rollback can bring the update count back to a value
-- the client read before it).
-- KEYS: 1 state hash
-- ARGV: 1 arm, 2 update count the client read, 3 new [A⁻¹ | θ] (packed doubles), 4 epoch read
-- Returns 1 when replaced, 0 when the arm moved on (the next update past the period retries).
local now = redis.call("hmget", KEYS[1], ARGV[1] .. ":updates", "epoch")
if now[1] ~= ARGV[2] or (now[2] or "0") ~= ARGV[4] then
    return 0
end
redis.call("hset", KEYS[1], ARGV[1] .. ":m", ARGV[3], ARGV[1] .. ":since", 0)
return 1
