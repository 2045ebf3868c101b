"""The flow-control gate's two Lua scripts (deliveries/flow/gate.py runs them).

Both read Redis's clock, so every worker agrees on time; each call handles one
endpoint's attempts of a batch.
"""

from webhooks_project.token_bucket import BUCKET_LUA

# KEYS: 1 state hash, 2 in-flight zset, 3 refusing zset. ARGV: rate, burst,
# max_in_flight, slot_ms, probe_ms, deadline_ms, hang_ms, hang_factor,
# stalled_ms, endpoint id, then one token per attempt asked for, in order.
# Returns {allowed, wait_ms, reason, probe} for each attempt, flattened. The
# endpoint's token bucket is the tenants' (webhooks_project/token_bucket.py).
ENTER = (
    BUCKET_LUA
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local slot_ms = tonumber(ARGV[4])
local probe_ms = tonumber(ARGV[5])
local deadline_ms = tonumber(ARGV[6])
local hang_ms = tonumber(ARGV[7])
local hang_factor = tonumber(ARGV[8])
local stalled_ms = tonumber(ARGV[9])
local n = #ARGV - 10
local out = {}
local function refuse_all(wait, reason)
  redis.call('ZADD', KEYS[3], 'GT', now + wait, ARGV[10])
  for i = 1, n do
    out[#out + 1] = 0; out[#out + 1] = wait; out[#out + 1] = reason; out[#out + 1] = 0
  end
  return out
end
local s = redis.call('HMGET', KEYS[1], 'paused_until', 'state', 'open_until',
  'probe_until', 'tokens', 'ts', 'avg_ms', 'last_end')
local paused_until = tonumber(s[1]) or 0
if paused_until > now then
  return refuse_all(paused_until - now, 'paused')
end
-- 0: closed; 1: half-open, the first allowed attempt is the probe; 2: probe out
local probing = 0
if s[2] == 'open' then
  local open_until = tonumber(s[3]) or 0
  if open_until > now then
    return refuse_all(open_until - now, 'circuit_open')
  end
  if (tonumber(s[4]) or 0) > now then
    return refuse_all(tonumber(s[4]) - now, 'half_open')
  end
  probing = 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local flying = redis.call('ZCARD', KEYS[2])
local busy_wait, busy_reason = nil, 'concurrency'
local tokens = nil
if rate > 0 then
  tokens = bucket_refill(tonumber(s[5]), tonumber(s[6]), now, rate, burst)
end
local short = 0
for i = 1, n do
  local allowed, wait, reason, probe = 0, 0, '', 0
  if probing == 2 then
    wait, reason = probe_ms, 'half_open'
  elseif cap > 0 and flying >= cap then
    if busy_wait == nil then
      local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      local started = tonumber(oldest[2]) - slot_ms
      local age = now - started
      -- How long nothing has happened: no request ended, none of those in
      -- flight started. An endpoint whose other slots keep turning over is
      -- busy, however long one of its requests hangs.
      local quiet = now - math.max(started, tonumber(s[8]) or 0)
      local avg = tonumber(s[7])
      local overdue = avg == nil or quiet >= hang_factor * avg
      if overdue and quiet >= hang_ms then
        -- Nothing ended for far longer than its requests take (or none ever
        -- did): it hangs. No slot is sure to free before its oldest
        -- request's deadline.
        busy_reason = 'hanging'
        busy_wait = math.max(50, deadline_ms - age)
        redis.call('ZADD', KEYS[3], 'GT', now + busy_wait, ARGV[10])
      elseif avg ~= nil and overdue and quiet >= stalled_ms then
        -- Overdue, not long enough to call it hanging: refuse until then, so
        -- that its backlog stops filling the workers' prefetch meanwhile. (An
        -- endpoint with no usual duration yet may just be slow: not before.)
        busy_reason = 'stalled'
        busy_wait = math.max(50, hang_ms - quiet)
        redis.call('ZADD', KEYS[3], 'GT', now + busy_wait, ARGV[10])
      else
        -- A slot frees when a request ends: expect the usual duration, or
        -- longer when nothing has ended for that long already.
        busy_wait = math.max(50, math.floor(math.max(avg or 0, quiet)))
      end
    end
    wait, reason = busy_wait, busy_reason
  elseif rate > 0 and tokens < 1 then
    -- Each refused attempt waits for a token of its own.
    short = short + 1
    wait, reason = bucket_wait_ms(short - tokens, rate), 'rate_limited'
  else
    allowed = 1
    if rate > 0 then tokens = tokens - 1 end
    if probing == 1 then
      probe, probing = 1, 2
      redis.call('HSET', KEYS[1], 'probe_until', now + probe_ms)
      redis.call('ZADD', KEYS[3], 'GT', now + probe_ms, ARGV[10])
    end
    redis.call('ZADD', KEYS[2], now + slot_ms, ARGV[10 + i])
    flying = flying + 1
  end
  out[#out + 1] = allowed; out[#out + 1] = wait
  out[#out + 1] = reason; out[#out + 1] = probe
end
if rate > 0 then
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
end
redis.call('PEXPIRE', KEYS[2], slot_ms * 2)
return out
"""
)

# KEYS: 1 state hash, 2 in-flight zset, 3 open-circuits set, 4 refusing zset.
# ARGV: threshold, base_cooldown_ms, max_cooldown_ms, endpoint id, then five per
# attempt, in the order they ended: token, succeeded, duration_ms, pause_ms,
# probe. Returns the breaker state after each attempt, with a '!' where that
# attempt opened (or reopened) or closed the circuit.
LEAVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local threshold = tonumber(ARGV[1])
local base = tonumber(ARGV[2])
local longest = tonumber(ARGV[3])
local endpoint = ARGV[4]
local s = redis.call('HMGET', KEYS[1], 'avg_ms', 'state', 'failures', 'cooldown_ms',
  'paused_until', 'ok_start')
local avg = tonumber(s[1])
local paused_until = tonumber(s[5]) or 0
local state = s[2] or 'closed'
local failures = tonumber(s[3]) or 0
local cooldown = tonumber(s[4]) or 0
local ok_start = tonumber(s[6]) or 0
local out = {}
for i = 5, #ARGV, 5 do
  local changed = false
  redis.call('ZREM', KEYS[2], ARGV[i])
  local duration = tonumber(ARGV[i + 2])
  local started = now - duration
  avg = math.floor((avg or duration) * 0.8 + duration * 0.2)
  local pause_ms = tonumber(ARGV[i + 3])
  if pause_ms > 0 then
    -- The receiver asked us to slow down: flow control, not a failure.
    paused_until = now + pause_ms
    redis.call('HSET', KEYS[1], 'paused_until', paused_until, 'probe_until', 0)
    redis.call('ZADD', KEYS[4], 'GT', paused_until, endpoint)
  elseif ARGV[i + 1] == '1' then
    ok_start = math.max(ok_start, started)
    if state ~= 'closed' or failures > 0 then
      if state ~= 'closed' then changed = true end
      state, failures, cooldown = 'closed', 0, 0
      redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0,
        'cooldown_ms', 0, 'probe_until', 0)
      redis.call('SREM', KEYS[3], endpoint)
    end
    if paused_until <= now then
      redis.call('ZREM', KEYS[4], endpoint)
    end
  elseif state ~= 'closed' or started >= ok_start then
    -- Consecutive failures are counted in the order requests were sent: one
    -- sent before a request that succeeded does not count, so the timeouts of
    -- requests that hung while the others were answered (they end together,
    -- later) do not open the circuit of an endpoint that answers most of them.
    failures = failures + 1
    local opens = nil
    if state == 'open' then
      -- Only a failed probe stretches the cooldown: attempts that began before
      -- the circuit opened say nothing new about the endpoint.
      if ARGV[i + 4] == '1' then
        opens = math.min(longest, math.max(base, cooldown * 2))
      end
    elseif failures >= threshold then
      opens = base
    end
    if opens ~= nil then
      state, cooldown, changed = 'open', opens, true
      redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + opens,
        'cooldown_ms', opens, 'probe_until', 0)
      redis.call('SADD', KEYS[3], endpoint)
      redis.call('ZADD', KEYS[4], math.max(now + opens, paused_until), endpoint)
    end
  end
  out[#out + 1] = changed and (state .. '!') or state
end
redis.call('HSET', KEYS[1], 'avg_ms', avg, 'failures', failures, 'last_end', now,
  'ok_start', ok_start)
return out
"""
