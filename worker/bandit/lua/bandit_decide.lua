-- One bandit decision in one round trip: count it on the shared decision counter, score every
-- arm, choose, count the pull and (optionally) store the decision with the caller's record.
-- Scoring is worker/bandit/linucb.py:score in IEEE doubles: per arm, z = x·[A⁻¹ | θ],
-- mean = θ·x = z[d+1], ucb = mean + alpha·sqrt(z[1..d]·x) with alpha of decision n (the
-- exploration schedule of shared/bandit_schedule.py: start through warm-up, then linear to end
-- over `steps` decisions; steps 0 = the constant start); decision number n ≤ warmup is a
-- warm-up decision (arm floor(u·K) for the caller's uniform draw u, propensity 1/K), later the
-- first arm with the highest ucb (propensity 1), exploration when its mean is not the highest.
--
-- KEYS: 1 decision counter, 2 state hash, 3 record hash (optional)
-- ARGV: 1 x (d packed doubles), 2 alpha / schedule start (packed double), 3 warmup,
--       4 u (packed double in [0, 1)), 5 record TTL in seconds (0: no expiry),
--       6 schedule end (packed double), 7 schedule decisions (0: constant alpha),
--       8 per-minute rollup key prefix ("": none), 9 UCB bucket width, 10 UCB buckets, 11.. arm names
-- The rollup of the current minute (Redis time) counts the decision, its exploration, the pull and
-- every arm's UCB score bucket (shared/bandit_rollup.py names the fields; kept 8 days).
-- Returns {n, arm index (1-based), exploration (0|1), packed ucb scores, packed alpha}
-- (propensity: 1/K when n ≤ warmup, else 1; the record gets "alpha" too, as %.17g text),
-- or {-1} when the state is missing (nothing counted; the caller initialises it and retries).
--! include bandit_lib

local k = #ARGV - 10
local fields = {"dim"}
for a = 1, k do
    fields[a + 1] = ARGV[10 + a] .. ":m"
end
local vals = redis.call("hmget", KEYS[2], unpack(fields))
for a = 1, k + 1 do
    if not vals[a] then
        return {-1}
    end
end
local d = tonumber(vals[1])
local x, bad = context(ARGV[1], d)
if not x then
    return bad
end
local n = redis.call("incr", KEYS[1])
local warmup = tonumber(ARGV[3])
local alpha = struct.unpack("<d", ARGV[2])
local steps = tonumber(ARGV[7])
if steps > 0 then
    local t = n - warmup
    local last = struct.unpack("<d", ARGV[6])
    if t >= steps then
        alpha = last
    elseif t > 0 then
        alpha = alpha + (last - alpha) * (t / steps)
    end
end
local d1 = d + 1

local ucb = {}
local mean = {}
for a = 1, k do
    local z = times_matrix(x, doubles(vals[a + 1], d * d1), d)
    local w = 0
    for j = 1, d do
        w = w + z[j] * x[j]
    end
    mean[a] = z[d1]
    ucb[a] = z[d1] + alpha * math.sqrt(w)
end

local best, propensity, exploration
if n <= warmup then
    best = math.floor(struct.unpack("<d", ARGV[4]) * k) + 1
    propensity = 1 / k
    exploration = 1
else
    best = 1
    local top = mean[1]
    for a = 2, k do
        if ucb[a] > ucb[best] then
            best = a
        end
        if mean[a] > top then
            top = mean[a]
        end
    end
    propensity = 1
    exploration = (mean[best] ~= top) and 1 or 0
end
local arm = ARGV[10 + best]
redis.call("hincrby", KEYS[2], arm .. ":pulls", 1)
local scores = struct.pack("<" .. string.rep("d", k), unpack(ucb, 1, k))
if KEYS[3] then
    redis.call("hset", KEYS[3], "arm", arm, "propensity", string.format("%.17g", propensity),
        "exploration", exploration, "x", ARGV[1], "decision", n, "alpha", string.format("%.17g", alpha))
    local ttl = tonumber(ARGV[5])
    if ttl > 0 then
        redis.call("expire", KEYS[3], ttl)
    end
end
if ARGV[8] ~= "" then
    local rollup = ARGV[8] .. math.floor(tonumber(redis.call("time")[1]) / 60)
    local width, top = tonumber(ARGV[9]), tonumber(ARGV[10]) - 1
    if redis.call("hincrby", rollup, "bandit:decisions", 1) == 1 then
        redis.call("expire", rollup, 8 * 86400)  -- once per minute's hash (finish.lua sets it too)
    end
    redis.call("hincrby", rollup, "bandit:explore", exploration)
    redis.call("hincrby", rollup, "bandit:pull:" .. arm, 1)
    for a = 1, k do
        local bucket = math.floor(ucb[a] / width)
        if not (bucket >= 0) then
            bucket = 0
        elseif bucket > top then
            bucket = top
        end
        redis.call("hincrby", rollup, "bandit:ucb:" .. ARGV[10 + a] .. ":" .. bucket, 1)
    end
end
return {n, best, exploration, scores, struct.pack("<d", alpha)}
