-- Apply one rating to one arm of the shared LinUCB: atomically, and at most once per rating key.
-- The arithmetic is worker/bandit/linucb.py:apply_update in IEEE doubles (Lua numbers):
--   v = x·[A⁻¹ | θ] = [uᵀ, θ·x],  q = u·x,  c = [u/(1+q), (θ·x − r)/(1+q)]
--   [A⁻¹ | θ] −= u cᵀ   (Sherman–Morrison on A⁻¹ and the matching step on θ)
--   [A | b]   += x [xᵀ, r]
-- Each matrix is a row-major d×(d+1) array of little-endian float64 (struct "<d"), so values
-- round-trip between numpy and Lua bit for bit.
--
-- Checkpoints (issue 18, part 4): the guard hash counts every applied rating (`applied`) and the
-- current window's reward sums per arm (`seg:{arm}:n|s|q`: count, sum, sum of squares). Every
-- `every`-th applied rating, in this same atomic call, the model ([A⁻¹ | θ], [A | b], reward sum,
-- update and since counts of every arm) is copied into the checkpoints hash under a new id, with
-- its window's sums in the meta hash; the oldest beyond `kept` is dropped, the window restarts
-- and `pending` says a rollback check is due (worker/bandit/redis_state.py runs it).
--
-- KEYS: 1 state hash, 2 rated set, 3 log stream, 4 window list, 5 guard hash, 6 checkpoints hash,
--       7 checkpoint meta hash
-- ARGV: 1 arm, 2 rating key (session_id:turn_number), 3 x (d packed doubles),
--       4 reward (1 packed double), 5 window size, 6 log maxlen (0: keep every entry),
--       7 checkpoint every (0: no checkpoints), 8 checkpoints kept,
--       9 per-minute rollup key prefix (optional; "": none): the current minute's rollup counts the
--         rating and adds its reward per arm (shared/bandit_rollup.py names the fields)
-- Returns {1, updates, since, pending (0|1), checkpoint id taken (0: none)} when applied, {0}
-- when the rating key was applied before, {-1} when the arm's state is missing (the caller
-- initialises the state and retries).
--! include bandit_lib

local arm = ARGV[1]
local vals = redis.call("hmget", KEYS[1], arm .. ":m", arm .. ":n", arm .. ":reward_sum", "dim")
if not vals[1] or not vals[2] or not vals[3] or not vals[4] then
    return {-1}
end
local d = tonumber(vals[4])
local x, bad = context(ARGV[3], d)
if not x then
    return bad
end
local r = struct.unpack("<d", ARGV[4])
local huge = math.huge
if r ~= r or r == huge or r == -huge then
    return redis.error_reply("reward is NaN or Inf")
end
for i = 1, d do
    local xi = x[i]
    if xi ~= xi or xi == huge or xi == -huge then
        return redis.error_reply("context contains NaN or Inf")
    end
end
if redis.call("sadd", KEYS[2], ARGV[2]) == 0 then
    return {0}
end

local d1 = d + 1
local size = d * d1
local fmt = "<" .. string.rep("d", size)
local m = doubles(vals[1], size)
local n = doubles(vals[2], size)

local v = times_matrix(x, m, d)
local q = 0
for i = 1, d do
    q = q + v[i] * x[i]
end
local denom = 1 + q
local c = {}
for j = 1, d do
    c[j] = v[j] / denom
end
c[d1] = (v[d1] - r) / denom
for i = 1, d do
    local ui = v[i]
    local xi = x[i]
    local row = (i - 1) * d1
    for j = 1, d do
        m[row + j] = m[row + j] - ui * c[j]
        n[row + j] = n[row + j] + xi * x[j]
    end
    m[row + d1] = m[row + d1] - ui * c[d1]
    n[row + d1] = n[row + d1] + xi * r
end

local reward_sum = struct.unpack("<d", vals[3]) + r
redis.call("hset", KEYS[1], arm .. ":m", struct.pack(fmt, unpack(m, 1, size)),
    arm .. ":n", struct.pack(fmt, unpack(n, 1, size)), arm .. ":reward_sum", struct.pack("<d", reward_sum))
local updates = redis.call("hincrby", KEYS[1], arm .. ":updates", 1)
local since = redis.call("hincrby", KEYS[1], arm .. ":since", 1)
local maxlen = tonumber(ARGV[6])
local log_id
if maxlen > 0 then
    log_id = redis.call("xadd", KEYS[3], "MAXLEN", "~", maxlen, "*", "k", ARGV[2], "arm", arm, "x", ARGV[3], "r", ARGV[4])
else
    log_id = redis.call("xadd", KEYS[3], "*", "k", ARGV[2], "arm", arm, "x", ARGV[3], "r", ARGV[4])
end
redis.call("lpush", KEYS[4], arm .. " " .. string.format("%.17g", r))
redis.call("ltrim", KEYS[4], 0, tonumber(ARGV[5]) - 1)
if ARGV[9] and ARGV[9] ~= "" then
    local rollup = ARGV[9] .. math.floor(tonumber(redis.call("time")[1]) / 60)
    if redis.call("hincrby", rollup, "bandit:rated:" .. arm, 1) == 1 then
        redis.call("expire", rollup, 8 * 86400)
    end
    redis.call("hincrbyfloat", rollup, "bandit:reward:" .. arm, string.format("%.17g", r))
end

-- the checkpoint window's sums and, every `every` ratings, a checkpoint
local guard = KEYS[5]
local applied = redis.call("hincrby", guard, "applied", 1)
local seg = redis.call("hmget", guard, "seg:" .. arm .. ":n", "seg:" .. arm .. ":s", "seg:" .. arm .. ":q", "pending")
redis.call("hset", guard, "seg:" .. arm .. ":n", (tonumber(seg[1]) or 0) + 1,
    "seg:" .. arm .. ":s", string.format("%.17g", (tonumber(seg[2]) or 0) + r),
    "seg:" .. arm .. ":q", string.format("%.17g", (tonumber(seg[3]) or 0) + r * r))
local pending = seg[4] == "1" and 1 or 0
local every = tonumber(ARGV[7])
local taken = 0
if every > 0 and applied % every == 0 then
    taken = redis.call("hincrby", guard, "seq", 1)
    local arms = {}
    for name in string.gmatch(redis.call("hget", KEYS[1], "arms"), "[^,]+") do
        arms[#arms + 1] = name
    end
    local names = {}
    for _, a in ipairs(arms) do
        for _, f in ipairs({"m", "n", "reward_sum", "updates", "since"}) do
            names[#names + 1] = a .. ":" .. f
        end
    end
    local values = redis.call("hmget", KEYS[1], unpack(names))
    local copy = {}
    for i, name in ipairs(names) do
        copy[#copy + 1] = taken .. ":" .. name
        copy[#copy + 1] = values[i]
    end
    redis.call("hset", KEYS[6], unpack(copy))
    local sums = {}
    local reset = {}
    for _, a in ipairs(arms) do
        local v = redis.call("hmget", guard, "seg:" .. a .. ":n", "seg:" .. a .. ":s", "seg:" .. a .. ":q")
        sums[a] = {tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0}
        reset[#reset + 1] = "seg:" .. a .. ":n"
        reset[#reset + 1] = "seg:" .. a .. ":s"
        reset[#reset + 1] = "seg:" .. a .. ":q"
    end
    redis.call("hdel", guard, unpack(reset))
    local now = redis.call("time")
    local meta = {id = taken, applied = applied, created_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000),
        log_id = log_id, epoch = tonumber(redis.call("hget", KEYS[1], "epoch") or "0"), arms = sums}
    redis.call("hset", KEYS[7], taken, cjson.encode(meta))
    local old = taken - tonumber(ARGV[8])
    if old > 0 and redis.call("hdel", KEYS[7], old) == 1 then
        local drop = {}
        for _, name in ipairs(names) do
            drop[#drop + 1] = old .. ":" .. name
        end
        redis.call("hdel", KEYS[6], unpack(drop))
    end
    if taken > 1 then
        redis.call("hset", guard, "pending", 1)
        pending = 1
    end
end
return {1, updates, since, pending, taken}
