#!lua
-- append.lua: atomically append k events to a partition log and to one
-- aggregate stream of that partition (all keys share the slot {cat:p}).
--
-- KEYS[1]  partition log        <ns>:{<cat>:<p>}:log
-- KEYS[2]  aggregate stream     <ns>:{<cat>:<p>}:agg:<id>
-- KEYS[3]  partition meta       <ns>:{<cat>:<p>}:meta
-- ARGV[1]  the partition meta the writer expects: "<namespace identity>/<partitions>"
-- ARGV[2]  "1": create the partition meta if it is missing and the log
--          holds no entry (the writer has just checked the namespace's
--          identity); "0": a missing meta key is an error
-- ARGV[3]  expected kind: "e" exact, "a" any, "x" stream exists
-- ARGV[4]  expected version (used with "e")
-- ARGV[5]  k, the number of events
-- ARGV[6]  aggregate ID
-- ARGV[7..] four per event: event UUID, type, data, metadata JSON ("" = none)
--
-- Returns {1, first_version, recorded_us, id_1 .. id_k}  appended
--         {2, first_version, "",          id_1 .. id_k}  already appended:
--                                                        an idempotent retry
--         {0, actual_version}                            conflict
--         {3, meta}                                      the partition meta is
--                                                        missing ("") or another
--                                                        one: nothing written
--
-- Guards I1: every ID comes from XADD <log> * (Redis keeps last_generated_id,
--            so IDs stay monotonic when the clock goes back); the aggregate
--            stream reuses it.
--        I2: all k events land in both streams or none does: a failed write
--            undoes the ones before it before the script returns.
--        I3: the version check and the writes run in one script.
--        I4: an append whose event UUIDs already sit at the versions it
--            expected returns the original IDs instead of writing again.
--        A partition never takes events for another namespace incarnation
--        or partition count than it was created with: a Redis that lost the
--        namespace (restarted empty, flushed) has no meta key, so an append
--        from a writer that knew the old namespace is refused, not applied
--        to a fresh, empty stream.
local log, agg, meta = KEYS[1], KEYS[2], KEYS[3]
local have = redis.call('GET', meta)
if have ~= ARGV[1] then
  if have == false and ARGV[2] == '1' and redis.call('XLEN', log) == 0 then
    redis.call('SET', meta, ARGV[1])
  else
    return {3, have or ''}
  end
end

local kind, expected, k, aggid = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local cur = redis.call('XLEN', agg)

local function eid(i) return ARGV[6 + (i - 1) * 4 + 1] end

-- IDs of the entries at versions from .. from+k-1 if their UUIDs are this
-- batch's, else nil. Reads from whichever end of the stream is closer.
local function already(from)
  local to = from + k - 1
  if from < 1 or to > cur then return nil end
  local rows
  local get
  if cur - from < from then
    rows = redis.call('XREVRANGE', agg, '+', '-', 'COUNT', cur - from + 1)
    get = function(v) return rows[cur - v + 1] end
  else
    rows = redis.call('XRANGE', agg, '-', '+', 'COUNT', to)
    get = function(v) return rows[v] end
  end
  local ids = {}
  for i = 1, k do
    local row = get(from + i - 1)
    if row == nil or row[2][2] ~= eid(i) then return nil end
    ids[i] = row[1]
  end
  return ids
end

local function duplicate(from, ids)
  local r = {2, from, ''}
  for i = 1, k do r[#r + 1] = ids[i] end
  return r
end

if kind == 'e' then
  if cur ~= expected then
    if cur > expected then
      local ids = already(expected + 1)
      if ids then return duplicate(expected + 1, ids) end
    end
    return {0, cur}
  end
else
  -- Any / StreamExists: best effort, the last k events are compared.
  -- The newest entry is looked at first: unless it is this batch's last
  -- event there is nothing to compare, and one entry is all that is read.
  if cur >= k then
    local last = redis.call('XREVRANGE', agg, '+', '-', 'COUNT', 1)[1]
    if last and last[2][2] == eid(k) then
      local ids = already(cur - k + 1)
      if ids then return duplicate(cur - k + 1, ids) end
    end
  end
  if kind == 'x' and cur == 0 then return {0, 0} end
end

local t = redis.call('TIME')
local recorded = t[1] .. string.format('%06d', tonumber(t[2]))

local ids = {}
local indexed = 0 -- ids[1..indexed] are in the aggregate stream too
local function undo(err)
  -- Only what this script wrote: an aggregate entry may carry the same ID
  -- as the log entry whose indexing failed (a log recreated within the
  -- millisecond of an earlier event).
  for j = 1, #ids do
    redis.pcall('XDEL', log, ids[j])
  end
  for j = 1, indexed do
    redis.pcall('XDEL', agg, ids[j])
  end
  return redis.error_reply('append undone: ' .. tostring(err))
end

for i = 1, k do
  local b = 6 + (i - 1) * 4
  local id = redis.pcall('XADD', log, '*',
    'v', '1', 'agg', aggid, 'ver', cur + i, 'eid', ARGV[b + 1],
    'type', ARGV[b + 2], 'data', ARGV[b + 3], 'meta', ARGV[b + 4], 'ts', recorded)
  if type(id) == 'table' and id.err then return undo(id.err) end
  ids[i] = id
  local ok = redis.pcall('XADD', agg, id, 'e', ARGV[b + 1])
  if type(ok) == 'table' and ok.err then return undo(ok.err) end
  indexed = i
end

local r = {1, cur + 1, recorded}
for i = 1, k do r[#r + 1] = ids[i] end
return r
