-- One LLM call's outcome into its tier's health record (worker.coach.llm.RedisTierReport), atomically:
-- the latency joins the tier's capped list, the last success / failure carry over from the record
-- before, and p50 / p95 (nearest rank) are taken over the list.
-- KEYS[1] the llm_tiers hash, KEYS[2] the tier's latency list
-- ARGV: tier, outcome, detail ('' = none), breaker, at (ms), worker, latency (ms, '' = none),
--       window, probe ('1' / '0')
local tier, outcome, detail, at = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[5])
local window = tonumber(ARGV[8])
local before = {}
local old = redis.call('HGET', KEYS[1], tier)
if old then
  local ok, decoded = pcall(cjson.decode, old)
  if ok and type(decoded) == 'table' then before = decoded end
end
if ARGV[7] ~= '' then
  redis.call('LPUSH', KEYS[2], ARGV[7])
  redis.call('LTRIM', KEYS[2], 0, window - 1)
end
local samples = {}
for i, value in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do samples[i] = tonumber(value) end
table.sort(samples)
local n = #samples
local function rank(p)
  if n == 0 then return cjson.null end
  return samples[math.max(1, math.ceil(p * n))]
end
local record = {
  breaker = ARGV[4], outcome = outcome, at = at, worker = ARGV[6], probe = ARGV[9] == '1',
  detail = detail ~= '' and detail or cjson.null,
  last_success = before.last_success or cjson.null,
  last_failure = before.last_failure or cjson.null,
  last_error = before.last_error or cjson.null,
  p50_ms = rank(0.5), p95_ms = rank(0.95), calls = n,
}
-- a rejected answer (the guard's) came from a model that works: it is not the model's failure
if outcome == 'ok' or outcome == 'rejected' then
  record.last_success = at
else
  record.last_failure = at
  record.last_error = record.detail
end
redis.call('HSET', KEYS[1], tier, cjson.encode(record))
return n
