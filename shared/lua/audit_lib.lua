-- The audit log's append: one stream entry per command or action (field "id" = the command id),
-- its outcome in the hash of outcomes under that id (the agent's replies update it in place,
-- shared.control.write_outcome), both trimmed together to the newest `cap` entries.
-- shared.store.lua_source inlines this file where a script says "--! include audit_lib".
local function audit_append(stream, outcomes, cap, id, ...)
    redis.call("xadd", stream, "*", "id", id, ...)
    local excess = redis.call("xlen", stream) - cap
    if excess > 0 then
        for _, entry in ipairs(redis.call("xrange", stream, "-", "+", "COUNT", excess)) do
            local fields = entry[2]
            for i = 1, #fields, 2 do
                if fields[i] == "id" then
                    redis.call("hdel", outcomes, fields[i + 1])
                end
            end
        end
        redis.call("xtrim", stream, "MAXLEN", cap)
    end
end
