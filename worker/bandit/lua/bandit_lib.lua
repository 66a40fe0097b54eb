-- Helpers shared by bandit_decide.lua and bandit_update.lua: Redis Lua has no modules, so
-- shared.store.lua_source (through
-- worker.bandit.scripts) inlines this file where a script says "--! include bandit_lib".

-- n little-endian float64 values from a packed blob (as numpy's "<f8" bytes).
local function doubles(blob, n)
    return {struct.unpack("<" .. string.rep("d", n), blob)}
end

-- The context x of d doubles, or nil and an error reply when the blob has another length.
local function context(blob, d)
    if #blob ~= 8 * d then
        return nil, redis.error_reply("context has " .. (#blob / 8) .. " doubles, the bandit has dim " .. d)
    end
    return doubles(blob, d)
end

-- z = xᵀ·[A⁻¹ | θ] for a row-major d×(d+1) matrix m: z[1..d] = (A⁻¹x)ᵀ, z[d+1] = θ·x.
local function times_matrix(x, m, d)
    local d1 = d + 1
    local z = {}
    for j = 1, d1 do
        z[j] = 0
    end
    for i = 1, d do
        local xi = x[i]
        local row = (i - 1) * d1
        for j = 1, d1 do
            z[j] = z[j] + xi * m[row + j]
        end
    end
    return z
end
