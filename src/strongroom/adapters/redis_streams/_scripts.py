"""The Lua scripts of the Redis Streams event log: each call of the log is one of them.

A script runs atomically in Redis: no other command runs between its first
and its last, so a check and the write it guards cannot be separated by
another gateway. A script is not rolled back when it fails halfway, though,
so every script that writes makes all its checks first and then issues only
writes that cannot fail.

Every script starts with a ``#!lua`` line (Redis 7.0 and later). Redis then
decides before running one whether it may write at all (on a read-only
replica, out of memory, with ``min-replicas-to-write`` unmet, after a failed
background save) and refuses it whole, instead of failing at its first write.

Offsets are integers; a record at offset ``n`` has the stream entry id
``<n + 1>-0``, so ``XRANGE`` by offset is direct and the first record has the
smallest id a stream accepts.
"""

from __future__ import annotations

from typing import Final

#: Entry fields, in the order every entry is written with.
FIELD_ID: Final = b"r"
FIELD_KEY: Final = b"k"
FIELD_AT: Final = b"a"
FIELD_PAYLOAD: Final = b"p"

#: The consumer that holds a replayed record until a member's read takes it.
REPLAY_CONSUMER: Final = "strongroom.replayed"

_HELPERS: Final = r"""
local function id_of(offset) return string.format('%d-0', offset + 1) end
local function ms_of(id) return tonumber(string.match(id, '^(%d+)')) end
local function offset_of(id) return ms_of(id) - 1 end
local function member_of(offset) return string.format('%d', offset) end
local function as_map(flat)
  local map = {}
  for i = 1, #flat, 2 do map[flat[i]] = flat[i + 1] end
  return map
end
local function chunks(list, fn)
  for i = 1, #list, 1000 do fn(unpack(list, i, math.min(i + 999, #list))) end
end

-- The (topic, tenant) pairs of an append: five keys each from KEYS[first_key],
-- two arguments (topic, tenant) each from ARGV[first_arg].
local function pairs_at(first_key, first_arg, count)
  local list = {}
  for n = 1, count do
    local k, a = first_key + (n - 1) * 5, first_arg + (n - 1) * 2
    list[n] = {meta = KEYS[k], tenants = KEYS[k + 1], stream = KEYS[k + 2],
               ids = KEYS[k + 3], topics = KEYS[k + 4], topic = ARGV[a], tenant = ARGV[a + 1]}
  end
  return list
end

-- Which records are new: not for an id stored already or repeated earlier in the call.
local function plan(records)
  local seen, fresh = {}, {}
  for i, r in ipairs(records) do
    local mark = r.pair.stream .. '\n' .. r.rid
    if seen[mark] or redis.call('HEXISTS', r.pair.ids, r.rid) == 1 then
      fresh[i] = false
    else
      seen[mark] = true
      fresh[i] = true
    end
  end
  return fresh
end

-- XADD fails when an id is not above the stream's last one, which happens only
-- when a topic's counter went back (its key evicted or deleted). Checked before
-- anything is written, so such a failure never leaves a batch half-recorded.
local function counters_behind(records, fresh)
  local checked = {}
  for i, r in ipairs(records) do
    local stream = r.pair.stream
    if fresh[i] and not checked[stream] then
      checked[stream] = true
      if redis.call('EXISTS', stream) == 1 then
        local last = as_map(redis.call('XINFO', 'STREAM', stream))['last-generated-id']
        local next_offset = tonumber(redis.call('HGET', r.pair.meta, 'next') or '0')
        if ms_of(last) > next_offset then return true end
      end
    end
  end
  return false
end

local COUNTER_BEHIND = 'COUNTERBEHIND a topic offset counter is behind its stream (key lost?)'

-- Writes the new records: offsets from each topic's counter in call order, one
-- appended_at per topic, never below the topic's last one, so a topic's times
-- never decrease with its offsets. Returns each new record's offset.
local function commit(records, fresh, now)
  local counts, next_of, at_of, registered = {}, {}, {}, {}
  for i, r in ipairs(records) do
    if fresh[i] then counts[r.pair.meta] = (counts[r.pair.meta] or 0) + 1 end
  end
  for meta, count in pairs(counts) do
    next_of[meta] = redis.call('HINCRBY', meta, 'next', count) - count
    local last = redis.call('HGET', meta, 'at')
    if last and tonumber(last) > tonumber(now) then
      at_of[meta] = last
    else
      at_of[meta] = now
      redis.call('HSET', meta, 'at', now)
    end
  end
  local offsets = {}
  for i, r in ipairs(records) do
    if fresh[i] then
      local p = r.pair
      local offset = next_of[p.meta]
      next_of[p.meta] = offset + 1
      offsets[i] = offset
      redis.call('XADD', p.stream, id_of(offset),
                 'r', r.rid, 'k', r.key, 'a', at_of[p.meta], 'p', r.payload)
      redis.call('HSET', p.ids, r.rid, member_of(offset))
      if not registered[p.stream] then
        registered[p.stream] = true
        redis.call('SADD', p.tenants, p.tenant)
        redis.call('SADD', p.topics, p.topic)
      end
    end
  end
  return offsets
end

local function has_group(stream, group)
  if redis.call('EXISTS', stream) == 0 then return false end
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    if as_map(info)['name'] == group then return true end
  end
  return false
end

-- A consumer lives in the group only while it holds pending deliveries, so
-- consumer names that callers make up do not pile up in Redis.
local function prune_consumers(stream, group, consumers)
  for consumer in pairs(consumers) do
    if #redis.call('XPENDING', stream, group, '-', '+', 1, consumer) == 0 then
      redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
    end
  end
end
"""


def _script(body: str, *, writes: bool = True) -> str:
    shebang = "#!lua" if writes else "#!lua flags=no-writes"
    return f"{shebang}\n{_HELPERS}\n{body}"


# KEYS: per (topic, tenant) pair the five keys of ``KeySpace.pair`` (topic
# counter, the topic's tenants, stream, ids, the tenant's topics). ARGV: now, number of pairs, per
# pair (topic, tenant), then per record (pair number, record id, key, payload).
# Returns 1 (new) or 0 (duplicate) per record.
APPEND: Final = _script(r"""
local now, count = ARGV[1], tonumber(ARGV[2])
local list = pairs_at(1, 3, count)
local records = {}
for i = 3 + 2 * count, #ARGV, 4 do
  records[#records + 1] = {pair = list[tonumber(ARGV[i])], rid = ARGV[i + 1],
                           key = ARGV[i + 2], payload = ARGV[i + 3]}
end
local fresh = plan(records)
if counters_behind(records, fresh) then return redis.error_reply(COUNTER_BEHIND) end
commit(records, fresh, now)
local out = {}
for i = 1, #records do out[i] = fresh[i] and 1 or 0 end
return out
""")

# KEYS: stream, deadlines, the tenant's groups, tenants with groups, the
# dead-letter topic's pair (five keys), the topic's tenants, the records
# waiting in dead letters. ARGV: group, consumer, limit, now, visible until,
# max deliveries, group member, dead-letter topic, tenant, topic, then per
# prepared dead letter (offset, deliveries, record id, key, payload).
#
# Returns {1, deliveries} with each delivery {offset, deliveries, fields}.
# Or, when records are due for the dead-letter topic and their dead letters
# were not prepared, {0, records} with each {offset, deliveries, fields}, having
# written nothing but the group and its registration: the caller prepares the
# dead letters (the shared envelope is made in Python) and calls again.
GROUP_READ: Final = _script(r"""
local stream, due = KEYS[1], KEYS[2]
local group, consumer, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now, visible, max_deliveries = ARGV[4], ARGV[5], tonumber(ARGV[6])
local dlq = pairs_at(5, 8, 1)[1]
if not has_group(stream, group) then
  redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
end
-- The stream may have been made here: it is registered as an append would.
redis.call('SADD', KEYS[3], ARGV[7])
redis.call('SADD', KEYS[4], ARGV[9])
redis.call('SADD', KEYS[10], ARGV[9])
redis.call('SADD', dlq.topics, ARGV[10])
local prepared = {}
for i = 11, #ARGV, 5 do
  prepared[ARGV[i] .. ':' .. ARGV[i + 1]] = {ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]}
end

local steps, unprepared, letters = {}, {}, {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)) do
  local offset = tonumber(member)
  local id = id_of(offset)
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  if #pending == 0 then
    steps[#steps + 1] = {'forget', offset}
  else
    local owner, count = pending[1][2], pending[1][4]
    local entry = redis.call('XRANGE', stream, id, id)
    if #entry == 0 then
      steps[#steps + 1] = {'settle', offset, owner}
    elseif count >= max_deliveries then
      local letter = prepared[member_of(offset) .. ':' .. count]
      if letter then
        steps[#steps + 1] = {'settle', offset, owner}
        letters[#letters + 1] = {pair = dlq, rid = letter[1], key = letter[2],
                                 payload = letter[3], origin = offset}
      else
        unprepared[#unprepared + 1] = {offset, count, entry[1][2]}
      end
    else
      steps[#steps + 1] = {'claim', offset, owner, count}
    end
  end
end
if #unprepared > 0 then return {0, unprepared} end
local fresh = plan(letters)
if counters_behind(letters, fresh) then return redis.error_reply(COUNTER_BEHIND) end

local deliveries, owners = {}, {[consumer] = true}
for _, step in ipairs(steps) do
  local kind, offset = step[1], step[2]
  redis.call('ZREM', due, member_of(offset))
  if kind == 'settle' then
    redis.call('XACK', stream, group, id_of(offset))
    owners[step[3]] = true
  elseif kind == 'claim' then
    local claimed = redis.call('XCLAIM', stream, group, consumer, 0, id_of(offset))
    redis.call('ZADD', due, visible, member_of(offset))
    owners[step[3]] = true
    deliveries[#deliveries + 1] = {offset, step[4] + 1, claimed[1][2]}
  end
end
for i, offset in pairs(commit(letters, fresh, now)) do
  redis.call('ZADD', KEYS[11], letters[i].origin, member_of(offset))
end
local room = limit - #deliveries
if room > 0 then
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', room,
                           'STREAMS', stream, '>')
  if reply then
    for _, entry in ipairs(reply[1][2]) do
      local offset = offset_of(entry[1])
      redis.call('ZADD', due, visible, member_of(offset))
      deliveries[#deliveries + 1] = {offset, 1, entry[2]}
    end
  end
end
prune_consumers(stream, group, owners)
return {1, deliveries}
""")

# KEYS: stream, deadlines. ARGV: group, then offsets. Returns how many pending
# deliveries were settled.
GROUP_ACK: Final = _script(r"""
local stream, due, group = KEYS[1], KEYS[2], ARGV[1]
if not has_group(stream, group) then return 0 end
local ids, members, owners = {}, {}, {}
for i = 2, #ARGV do
  local offset = tonumber(ARGV[i])
  local id = id_of(offset)
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  if #pending > 0 then
    ids[#ids + 1] = id
    owners[pending[1][2]] = true
  end
  members[#members + 1] = member_of(offset)
end
local settled = 0
chunks(ids, function(...) settled = settled + redis.call('XACK', stream, group, ...) end)
chunks(members, function(...) redis.call('ZREM', due, ...) end)
prune_consumers(stream, group, owners)
return settled
""")

# KEYS: stream, deadlines, replay marks of the dead-letter topic, the records
# waiting in dead letters. ARGV: group,
# now, the consumer to hold replayed records, then per dead letter
# (dead-letter offset, offset). A letter is replayed
# once: its mark is set here, and only where none was. Its record becomes a
# pending delivery with no delivery yet, due now. Returns how many were replayed.
REPLAY: Final = _script(r"""
local stream, due, marks = KEYS[1], KEYS[2], KEYS[3]
local group, now, holder = ARGV[1], ARGV[2], ARGV[3]
if not has_group(stream, group) then return 0 end
local replayed = 0
for i = 4, #ARGV, 2 do
  local offset = tonumber(ARGV[i + 1])
  local id = id_of(offset)
  if redis.call('HEXISTS', marks, ARGV[i]) == 0 and #redis.call('XRANGE', stream, id, id) > 0 then
    redis.call('HSET', marks, ARGV[i], now)
    redis.call('ZREM', KEYS[4], ARGV[i])
    redis.call('XCLAIM', stream, group, holder, 0, id,
               'FORCE', 'RETRYCOUNT', 0, 'JUSTID')
    redis.call('ZADD', due, now, member_of(offset))
    replayed = replayed + 1
  end
end
return replayed
""")

# KEYS: stream, deadlines, the tenant's groups, tenants with groups, the
# tenant's topics, the topic's tenants. ARGV: group, offset, group member,
# tenant, topic. The group is made anew (dropping its pending deliveries and
# consumers) with its position just before ``offset``.
REWIND: Final = _script(r"""
local stream, due, group = KEYS[1], KEYS[2], ARGV[1]
local offset = tonumber(ARGV[2])
if has_group(stream, group) then redis.call('XGROUP', 'DESTROY', stream, group) end
redis.call('XGROUP', 'CREATE', stream, group, string.format('%d-0', offset), 'MKSTREAM')
redis.call('DEL', due)
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[5])
redis.call('SADD', KEYS[6], ARGV[4])
return 1
""")

# KEYS: stream. ARGV: epoch seconds. The offset of the first record appended
# at or after that time, or nil: a binary search over offsets, which holds
# because a topic's times never decrease with its offsets (see ``commit``).
OFFSET_AT: Final = _script(
    r"""
local stream, at = KEYS[1], tonumber(ARGV[1])
local function first_from(offset)
  local entry = redis.call('XRANGE', stream, id_of(offset), '+', 'COUNT', 1)[1]
  if not entry then return nil end
  return offset_of(entry[1]), tonumber(as_map(entry[2])['a'])
end
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
if not last or tonumber(as_map(last[2])['a']) < at then return false end
local low, high = first_from(0), offset_of(last[1])
local found = high
while low <= high do
  local middle = math.floor((low + high) / 2)
  local offset, appended = first_from(middle)
  if offset > high then
    high = middle - 1
  elseif appended >= at then
    found = offset
    high = middle - 1
  else
    low = offset + 1
  end
end
return found
""",
    writes=False,
)

# KEYS: stream, ids, its records waiting in dead letters; when the stream's
# topic is a dead-letter topic, its replay marks and the records its letters
# hold back (else the same three keys again). ARGV: records to keep, most
# records to delete now, 1 when the topic is a dead-letter topic. Deletes the
# oldest records beyond the newest ones to keep, stopping at the first record
# a consumer group has not settled: not delivered yet, pending, or waiting in
# dead letters. Returns {deleted, 1 when more may be deleted by calling again}.
TRIM: Final = _script(r"""
local stream, ids, waiting = KEYS[1], KEYS[2], KEYS[3]
local keep, most, letters = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
if redis.call('EXISTS', stream) == 0 then return {0, 0} end
local excess = redis.call('XLEN', stream) - keep
if excess <= 0 then return {0, 0} end
local take = math.min(excess, most)
local ceiling = nil
for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local group = as_map(info)
  local bound = ms_of(group['last-delivered-id'])
  local pending = redis.call('XPENDING', stream, group['name'])
  if pending[1] > 0 then bound = math.min(bound, ms_of(pending[2]) - 1) end
  if ceiling == nil or bound < ceiling then ceiling = bound end
end
local oldest = redis.call('ZRANGE', waiting, 0, 0, 'WITHSCORES')
if #oldest > 0 then
  local bound = tonumber(oldest[2])
  if ceiling == nil or bound < ceiling then ceiling = bound end
end
local last, rids, offsets = nil, {}, {}
for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', take)) do
  if ceiling ~= nil and ms_of(entry[1]) > ceiling then break end
  last = entry[1]
  rids[#rids + 1] = as_map(entry[2])['r']
  offsets[#offsets + 1] = member_of(offset_of(entry[1]))
end
if last == nil then return {0, 0} end
local deleted = redis.call('XTRIM', stream, 'MINID', string.format('%d-1', ms_of(last)))
chunks(rids, function(...) redis.call('HDEL', ids, ...) end)
if letters then
  -- Trimmed dead letters neither hold their records back nor keep replay marks.
  chunks(offsets, function(...) redis.call('HDEL', KEYS[4], ...) end)
  chunks(offsets, function(...) redis.call('ZREM', KEYS[5], ...) end)
end
return {deleted, (#rids == take and excess > take) and 1 or 0}
""")

# KEYS: the tenant's topics, the tenant's groups, tenants with groups; then per
# topic five keys (stream, ids, replay marks, records waiting in dead letters,
# the topic's tenants); then the
# groups' deadline keys. ARGV: tenant, number of topics, then the topics, then
# the group members. Returns how many records were deleted.
ERASE: Final = _script(r"""
local tenant, count = ARGV[1], tonumber(ARGV[2])
local erased = 0
for n = 1, count do
  local k = 4 + (n - 1) * 5
  erased = erased + redis.call('XLEN', KEYS[k])
  redis.call('DEL', KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3])
  redis.call('SREM', KEYS[k + 4], tenant)
  redis.call('SREM', KEYS[1], ARGV[2 + n])
end
for k = 4 + count * 5, #KEYS do redis.call('DEL', KEYS[k]) end
for i = 3 + count, #ARGV do redis.call('SREM', KEYS[2], ARGV[i]) end
if redis.call('SCARD', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], tenant) end
return erased
""")

#: Refused by Redis exactly when an append would be (see the module docstring).
WRITABLE: Final = "#!lua\nreturn 1\n"
