#!lua
-- append.lua: atomically append k events to a partition log and to the
-- index of one aggregate of that partition (all keys share the slot
-- {cat:p}). Format 2 (docs/format.md).
--
-- KEYS[1]  partition log     <ns>:{<cat>:<p>}:log   stream, fields h2 and d
-- KEYS[2]  aggregate index   <ns>:{<cat>:<p>}:agg:<id>  list of log IDs,
--                            element i is version i+1
-- KEYS[3]  partition meta    <ns>:{<cat>:<p>}:meta
-- ARGV[1]  the partition meta the writer expects: "<namespace identity>/<partitions>"
-- ARGV[2]  control, four parts:
--            [1] "C": create the partition meta if it is missing and the
--                log holds no entry (the writer has just checked the
--                namespace identity); "-": a missing meta key is an error
--            [2] expected version kind: "e" exact, "a" any, "x" stream exists
--            [3] "R": a re-send (any/exists): look for these events in the
--                aggregate first; "-": not
--            [4..] with "e": the expected version; with "R": the lowest log
--                millisecond the original append can have (0: no bound)
-- ARGV[3..] two per event: its h2 header and its data. With "e" the header
--          is whole ("<version> <eid16><type>\0<agg>\0<meta>"); otherwise
--          it lacks the version, which this script puts in front.
--
-- Returns a string: "1 <first version> <id_1> .. <id_k>"  appended
--                   "2 <first version> <id_1> .. <id_k>"  already appended:
--                                                         an idempotent retry
--                   "0 <actual version>"                  conflict
--                   "3 <meta>"                            the partition meta is
--                                                         missing ("3 ") or
--                                                         another one: nothing
--                                                         written
--
-- Guards I1: every ID comes from XADD <log> * (Redis keeps last_generated_id,
--            so IDs stay monotonic when the clock goes back).
--        I2: all k events land in the log and the index or none does: a
--            failed write undoes the ones before it before the script
--            returns.
--        I3: the version check and the writes run in one script.
--        I4: an append whose event UUIDs already sit at the versions it
--            expected (exact), anywhere after its bound (a flagged re-send)
--            or at the end of the aggregate (any, exists) returns the
--            original IDs instead of writing again.
--        A partition never takes events for another namespace incarnation
--        or partition count than it was created with.
local log, idx, meta = KEYS[1], KEYS[2], KEYS[3]
local ctl = ARGV[2]
local have = redis.call('GET', meta)
if have ~= ARGV[1] then
  if have == false and string.byte(ctl, 1) == 67 and redis.call('XLEN', log) == 0 then
    redis.call('SET', meta, ARGV[1])
  else
    return '3 ' .. (have or '')
  end
end

local k = (#ARGV - 2) / 2
local exact = string.byte(ctl, 2) == 101
local cur = redis.call('LLEN', idx)

-- The event UUID of a header: the 16 bytes after its first space.
local function eid(h)
  local sp = string.find(h, ' ', 1, true)
  return string.sub(h, sp + 1, sp + 16)
end
local function logEID(id)
  local e = redis.call('XRANGE', log, id, id)[1]
  if e == nil then return nil end
  return eid(e[2][2])
end

-- The original IDs if the events at versions from..from+k-1 are this
-- batch's, else nil.
local function already(from)
  if from < 1 or from + k - 1 > cur then return nil end
  local ids = redis.call('LRANGE', idx, from - 1, from + k - 2)
  for i = 1, k do
    if logEID(ids[i]) ~= eid(ARGV[1 + 2 * i]) then return nil end
  end
  return ids
end

local function duplicate(from, ids)
  return '2 ' .. from .. ' ' .. table.concat(ids, ' ')
end

if exact then
  local expected = tonumber(string.sub(ctl, 4))
  if cur ~= expected then
    if cur > expected then
      local ids = already(expected + 1)
      if ids then return duplicate(expected + 1, ids) end
    end
    return '0 ' .. cur
  end
else
  if string.byte(ctl, 3) == 82 and cur > 0 then
    -- A re-send: the original, if it landed, is at or after the bound.
    -- Walk the index back from the end, a page at a time.
    local bound = tonumber(string.sub(ctl, 4))
    local first = eid(ARGV[3])
    local stop = cur
    while stop >= 1 do
      local start = math.max(1, stop - 63)
      local ids = redis.call('LRANGE', idx, start - 1, stop - 1)
      for j = #ids, 1, -1 do
        local id = ids[j]
        if tonumber(string.sub(id, 1, string.find(id, '-', 1, true) - 1)) < bound then
          stop = 0
          break
        end
        if logEID(id) == first then
          local found = already(start + j - 1)
          if found then return duplicate(start + j - 1, found) end
          return '0 ' .. cur -- a partial match
        end
      end
      stop = start - 1
    end
  elseif cur >= k then
    -- Not flagged: best effort, the last k events are compared. The
    -- newest is looked at first: unless it is this batch's last event
    -- there is nothing to compare.
    if logEID(redis.call('LINDEX', idx, -1)) == eid(ARGV[1 + 2 * k]) then
      local ids = already(cur - k + 1)
      if ids then return duplicate(cur - k + 1, ids) end
    end
  end
  if string.byte(ctl, 2) == 120 and cur == 0 then return '0 0' end
end

local ids = {}
local function undo(err)
  for j = 1, #ids do redis.pcall('XDEL', log, ids[j]) end
  return redis.error_reply('append undone: ' .. tostring(err))
end
for i = 1, k do
  local h = ARGV[1 + 2 * i]
  if not exact then h = (cur + i) .. h end
  local id = redis.pcall('XADD', log, '*', 'h2', h, 'd', ARGV[2 + 2 * i])
  if type(id) == 'table' and id.err then return undo(id.err) end
  ids[i] = id
end
local ok = redis.pcall('RPUSH', idx, unpack(ids))
if type(ok) == 'table' and ok.err then return undo(ok.err) end
return '1 ' .. (cur + 1) .. ' ' .. table.concat(ids, ' ')
