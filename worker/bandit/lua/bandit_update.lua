-- Apply one rating to one arm of the shared LinUCB: atomically, and at most once per rating key.
-- The arithmetic is worker/bandit/linucb.py:apply_update in IEEE doubles (Lua numbers):
--   v = x·[A⁻¹ | θ] = [uᵀ, θ·x],  q = u·x,  c = [u/(1+q), (θ·x − r)/(1+q)]
--   [A⁻¹ | θ] −= u cᵀ   (Sherman–Morrison on A⁻¹ and the matching step on θ)
--   [A | b]   += x [xᵀ, r]
-- Each matrix is a row-major d×(d+1) array of little-endian float64 (struct "<d"), so values
-- round-trip between numpy and Lua bit for bit.
--
-- KEYS: 1 state hash, 2 rated set, 3 log stream, 4 window list
-- ARGV: 1 arm, 2 rating key (session_id:turn_number), 3 x (d packed doubles),
--       4 reward (1 packed double), 5 window size, 6 log maxlen (0: keep every entry)
-- Returns {1, updates, since} when applied, {0} when the rating key was applied before,
-- {-1} when the arm's state is missing (the caller initialises the state and retries).
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
if maxlen > 0 then
    redis.call("xadd", KEYS[3], "MAXLEN", "~", maxlen, "*", "k", ARGV[2], "arm", arm, "x", ARGV[3], "r", ARGV[4])
else
    redis.call("xadd", KEYS[3], "*", "k", ARGV[2], "arm", arm, "x", ARGV[3], "r", ARGV[4])
end
redis.call("lpush", KEYS[4], arm .. " " .. string.format("%.17g", r))
redis.call("ltrim", KEYS[4], 0, tonumber(ARGV[5]) - 1)
return {1, updates, since}
