"""The Lua scripts of the bus: each one atomic on the Redis server (see where they are used)."""

# Acquire: free -> INCR the term and SET the lease; still ours (ARGV[3]) -> extend it, same term;
# held by another -> {0, value, pttl}. One script, so a term is never burnt on a lost race.
# Success is {1, token, n}: n = the replicas online on this server now (INFO replication), which
# the caller then WAITs for (bus/lease.py): replication is asynchronous, and a term the replicas
# never got could be handed out again by a promoted one.
ACQUIRE_LUA = """
local function online_replicas()
  local n = 0
  for _ in string.gmatch(redis.call('INFO', 'replication'), 'state=online') do
    n = n + 1
  end
  return n
end
local current = redis.call('GET', KEYS[1])
if current then
  if current == ARGV[3] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, current, online_replicas()}
  end
  return {0, current, redis.call('PTTL', KEYS[1])}
end
local token = ARGV[1] .. ':' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return {1, token, online_replicas()}
"""
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Fenced publish. KEYS: lease, stream, latest hash, status hash. ARGV: token, maxlen, term, then per
# event: hash ('t' latest / 's' status), hash field, hash value, n, n field/value pairs.
# Refuses ({0, current holder}) unless the lease still holds exactly our token: the check and the
# writes are one atomic script, so an old leader can never write after a new term began.
PUBLISH_LUA = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {0, current or ''}
end
local out = {1}
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i + 3])
  local entry = {}
  for j = 1, 2 * n do
    entry[j] = ARGV[i + 3 + j]
  end
  entry[2 * n + 1] = 'term'
  entry[2 * n + 2] = ARGV[3]
  out[#out + 1] = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(entry))
  local hash = KEYS[3]
  if ARGV[i] == 's' then
    hash = KEYS[4]
  end
  redis.call('HSET', hash, ARGV[i + 1], ARGV[i + 2])
  i = i + 4 + 2 * n
end
return out
"""

# Deletes a consumer of the group only if nothing is pending for it: checked and done atomically,
# because XGROUP DELCONSUMER drops the consumer's pending entries with it (they would never be
# persisted). Returns 1 when deleted.
DROP_CONSUMER_LUA = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) and 1
"""

# Post a venue's ban: KEYS[1] the ban key; ARGV: end (epoch ms), why, hold (ms). Keeps the later
# end when two collectors post at once. Returns 1 when written.
POST_BAN_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  local known = tonumber(string.match(current, '^(%d+)'))
  if known and known >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
return 1
"""
