-- Helpers shared by deploy_create.lua and deploy_claim.lua: Redis Lua has no modules, so
-- shared.store.lua_source inlines this file where a script says "--! include deploy_lib".

-- True when the deploy record `prefix .. id` holds its service (a status of
-- shared.deploy.models.ACTIVE_STATUSES); false when it has ended or vanished.
local function is_active(prefix, id)
    local st = redis.call("hget", prefix .. id, "status")
    return st == "queued" or st == "in_progress" or st == "canary" or st == "paused" or st == "promoting"
        or st == "awaiting_confirmation"
end
