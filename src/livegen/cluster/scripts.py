"""The Lua scripts through which a node changes the cluster's keys in Redis, each atomic there
(see `registry` for the keys and what each step is for)."""

# KEYS[1]: the claim; ARGV: our id, TTL (ms), prefix of node keys. Returns the holder's id.
CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and redis.call('EXISTS', ARGV[3] .. holder) == 1 then
  return holder
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""

# KEYS: our record, the node set, the claims of our n streams, then claims to release.
# ARGV: our id, our record, TTL (ms), n, prefix of node keys. Returns the claims live nodes hold.
HEARTBEAT = """
local id, ttl, n = ARGV[1], ARGV[3], tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('SADD', KEYS[2], id)
local lost = {}
for i = 3, 2 + n do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= id and redis.call('EXISTS', ARGV[5] .. holder) == 1 then
    table.insert(lost, KEYS[i])
  else
    redis.call('SET', KEYS[i], id, 'PX', ttl)
  end
end
for i = 3 + n, #KEYS do
  if redis.call('GET', KEYS[i]) == id then redis.call('DEL', KEYS[i]) end
end
return lost
"""

# KEYS[1]: the claim; ARGV[1]: prefix of node keys. Returns the holder's record, or nil.
OWNER = """
local holder = redis.call('GET', KEYS[1])
if not holder then return false end
return redis.call('GET', ARGV[1] .. holder)
"""

# KEYS[1]: the node set; ARGV[1]: prefix of node keys. Returns the live records; prunes the rest.
NODES = """
local records = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local record = redis.call('GET', ARGV[1] .. id)
  if record then table.insert(records, record) else redis.call('SREM', KEYS[1], id) end
end
return records
"""

# KEYS[1]: the claim; ARGV[1]: our id. Deletes the claim only while it is ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: our record, the node set, claims to release if ours; ARGV[1]: our id.
WITHDRAW = """
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 0
"""
