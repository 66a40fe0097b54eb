-- A Dramatiq process renews the leases of the attempts it is running (every heartbeat beat).
-- A lease is renewed — or set again, when it expired while nobody took the task over — only while
-- the attempt is still the task's current one and running; otherwise the attempt has gone stale
-- (another process took it over) and its id is returned so the process can say so.
--
-- KEYS: pairs of (task hash, task lease), one pair per attempt
-- ARGV: 1 lease ttl (ms), 2 worker id (``<worker>/<pid>``), 3.. one attempt id per pair
-- Returns the attempt ids that are no longer current.
local stale = {}
for i = 1, #KEYS, 2 do
    local attempt = ARGV[2 + (i + 1) / 2]
    local info = redis.call("hmget", KEYS[i], "attempt_id", "status")
    if info[1] == attempt and info[2] == "running" then
        redis.call("set", KEYS[i + 1], ARGV[2] .. " " .. attempt, "PX", ARGV[1])
    else
        stale[#stale + 1] = attempt
    end
end
return stale
