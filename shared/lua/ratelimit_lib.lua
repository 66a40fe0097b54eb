-- Token buckets per (subject, route class), in their GCRA form: one integer per bucket, the
-- theoretical arrival time (TAT, µs of Redis server time) of the next request. A bucket of
-- `burst` tokens refilled at one token per `interval` µs admits a request at `now` when
-- max(TAT, now) + interval - now <= burst * interval (= `limit`); admitting it moves the TAT on by
-- one interval. So a full bucket admits exactly `burst` requests at once, then one per interval.
-- The key expires when the bucket would be full again (TAT reached): idle subjects cost nothing.
-- shared.store.lua_source inlines this file where a script says "--! include ratelimit_lib".

-- Redis server time in µs (exact in a double: ~2^51 today). The clock of every coordinator
-- process is irrelevant: all of them share this one.
local function rate_limit_now()
    local t = redis.call("time")
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Take one token from the bucket at `key`: 0 when taken, else the wait in ms (>= 1) until one
-- is there. `interval` and `limit` are integers (µs per token, burst * interval).
local function rate_limit_take(key, interval, limit, now)
    local tat = tonumber(redis.call("get", key) or "0") or 0
    if tat < now then
        tat = now
    end
    local next_tat = tat + interval
    local excess = next_tat - now - limit
    if excess > 0 then
        return math.ceil(excess / 1000)
    end
    redis.call("set", key, string.format("%d", next_tat), "PX", math.ceil((next_tat - now) / 1000))
    return 0
end
