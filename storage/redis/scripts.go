package redis

import goredis "github.com/redis/go-redis/v9"

// Script replies start with a status.
const (
	statusFenced = 0 // {0, current fence}
	statusOK     = 1 // {1, event ids...}
	statusRetry  = 2 // clear: a namespace appeared that was not in KEYS
)

// luaLess compares two decimal tokens exactly (Lua numbers are doubles and
// lose precision above 2^53; tokens are uint64).
const luaLess = `
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
`

// raiseFenceScript: KEYS[1] = fence, ARGV[1] = token.
var raiseFenceScript = goredis.NewScript(luaLess + `
local cur = redis.call('GET', KEYS[1])
if cur and less(ARGV[1], cur) then return {0, cur} end
if (not cur) or less(cur, ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return {1}
`)

// applyScript checks the fence and applies a batch of operations, all in
// one atomic script.
//
//	KEYS[1] fence  KEYS[2] nss  KEYS[3] events  KEYS[4] cursors  KEYS[5..] kv hashes
//	ARGV[1] token  ARGV[2] max events (0 = unbounded)  ARGV[3] max age in ms (0 = unbounded)
//	ARGV[4..] operations:
//	  P kidx ns field value   put
//	  D kidx ns field         delete
//	  N kidx ns               clear namespace
//	  E type data             append event (XADD, exact MAXLEN trim)
//	  A consumer cursor       ack
//	  C m (kidx ns)*m         clear the profile; must come alone
//
// Every key the script touches is declared in KEYS and carries the same
// {p:<profile>} hash tag, so the script is single-slot (Redis Cluster safe).
// Validation happens in Go before the script runs, so after the fence check
// no operation can fail half-way.
var applyScript = goredis.NewScript(luaLess + `
local fence = redis.call('GET', KEYS[1])
if fence and less(ARGV[1], fence) then return {0, fence} end
local maxlen = tonumber(ARGV[2])
local maxage = tonumber(ARGV[3])
local out = {1}
local appended = false
local i = 4
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  if op == 'P' then
    redis.call('HSET', KEYS[tonumber(ARGV[i+1])], ARGV[i+3], ARGV[i+4])
    redis.call('SADD', KEYS[2], ARGV[i+2])
    i = i + 5
  elseif op == 'D' then
    local k = KEYS[tonumber(ARGV[i+1])]
    redis.call('HDEL', k, ARGV[i+3])
    if redis.call('HLEN', k) == 0 then redis.call('SREM', KEYS[2], ARGV[i+2]) end
    i = i + 4
  elseif op == 'N' then
    redis.call('DEL', KEYS[tonumber(ARGV[i+1])])
    redis.call('SREM', KEYS[2], ARGV[i+2])
    i = i + 3
  elseif op == 'E' then
    local id
    if maxlen > 0 then
      id = redis.call('XADD', KEYS[3], 'MAXLEN', '=', ARGV[2], '*', 't', ARGV[i+1], 'd', ARGV[i+2])
    else
      id = redis.call('XADD', KEYS[3], '*', 't', ARGV[i+1], 'd', ARGV[i+2])
    end
    out[#out+1] = id
    appended = true
    i = i + 3
  elseif op == 'A' then
    redis.call('HSET', KEYS[4], ARGV[i+1], ARGV[i+2])
    i = i + 3
  elseif op == 'C' then
    local m = tonumber(ARGV[i+1])
    local given = {}
    for j = 0, m - 1 do given[ARGV[i+3+2*j]] = true end
    for _, ns in ipairs(redis.call('SMEMBERS', KEYS[2])) do
      if not given[ns] then return {2} end
    end
    for j = 0, m - 1 do redis.call('DEL', KEYS[tonumber(ARGV[i+2+2*j])]) end
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
    i = i + 2 + 2 * m
  else
    return redis.error_reply('amarula apply: unknown op ' .. tostring(op))
  end
end
if appended and maxage > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', KEYS[3], 'MINID', '=', string.format('%d', now - maxage))
end
return out
`)
