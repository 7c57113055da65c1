#!lua
-- append.lua: atomically append k events to a partition log and to the
-- index of one aggregate of that partition (all keys share the slot
-- {cat:p}). Format 2 (docs/format.md).
--
-- KEYS[1]  partition log     <ns>:{<cat>:<p>}:log   stream, fields h2 and d
-- KEYS[2]  aggregate index   <ns>:{<cat>:<p>}:agg:<id>  list, element i
--                            is version i+1: its log ID followed by the
--                            last two bytes of its event UUID (a
--                            fingerprint: a retry is looked for without
--                            reading the log)
-- KEYS[3]  partition meta    <ns>:{<cat>:<p>}:meta
-- ARGV[1]  the partition meta the writer expects: "<namespace identity>/<partitions>"
-- ARGV[2]  control, four parts:
--            [1] "C": create the partition meta if it is missing and the
--                log holds no entry (the writer has just checked the
--                namespace identity); "-": a missing meta key is an error
--            [2] expected version kind: "e" exact, "a" any, "x" stream exists
--            [3] "R": a re-send (any/exists): look for these events in the
--                aggregate back to the bound; "-": compare the last k events
--                if the aggregate's newest is not older than the bound
--            [4..] "e": the expected version; "a"/"x": the bound, the lowest
--                log millisecond the original append can have (0: none)
-- ARGV[3..] two per event: its h2 header and its data. With "e" the header
--          is whole ("<eid16><version> <type>\0<agg>\0<meta>"); otherwise
--          it lacks the version, which this script puts after the UUID.
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
--            expected (exact), after its bound (a re-send) or at the end of
--            the aggregate (any, exists) returns the original IDs instead
--            of writing again.
--        A partition never takes events for another namespace incarnation
--        or partition count than it was created with.
--
-- The common path (the version matches, nothing to look for) runs no
-- function definitions and makes four calls: GET, LLEN, XADD, RPUSH; what
-- only a retry needs is defined inside the branches that need it.
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
local found, from -- the original of a retry: its IDs and first version

local function lookup()
  -- The event UUID of a header: its first 16 bytes; the last two of them
  -- are the fingerprint an index element ends with.
  local function eid(h) return string.sub(h, 1, 16) end
  local function logEID(id)
    local e = redis.call('XRANGE', log, id, id)[1]
    if e == nil then return nil end
    return eid(e[2][2])
  end
  local function plain(el) return string.sub(el, 1, -3) end
  -- The original IDs if the events at versions v..v+k-1 are this batch's.
  local function at(v)
    if v < 1 or v + k - 1 > cur then return nil end
    local els = redis.call('LRANGE', idx, v - 1, v + k - 2)
    local ids = {}
    for i = 1, k do
      local want = eid(ARGV[1 + 2 * i])
      if string.sub(els[i], -2) ~= string.sub(want, -2) then return nil end
      ids[i] = plain(els[i])
      if logEID(ids[i]) ~= want then return nil end
    end
    return ids
  end
  local function ms(el) return tonumber(string.sub(el, 1, string.find(el, '-', 1, true) - 1)) end

  if exact then
    local v = tonumber(string.sub(ctl, 4)) + 1
    return at(v), v
  end
  local bound = tonumber(string.sub(ctl, 4))
  if string.byte(ctl, 3) ~= 82 then
    -- Not a known re-send: the last k events, if the newest has this
    -- batch's last fingerprint and is recent enough to be the original.
    if cur < k then return nil end
    local last = redis.call('LINDEX', idx, -1)
    if string.sub(last, -2) ~= string.sub(eid(ARGV[1 + 2 * k]), -2) or ms(last) < bound then return nil end
    return at(cur - k + 1), cur - k + 1
  end
  -- A re-send: walk the index back from the end, a page at a time, to the
  -- bound.
  local first = eid(ARGV[3])
  local fp = string.sub(first, -2)
  local stop = cur
  while stop >= 1 do
    local start = math.max(1, stop - 255)
    local els = redis.call('LRANGE', idx, start - 1, stop - 1)
    for j = #els, 1, -1 do
      if ms(els[j]) < bound then return nil end
      if string.sub(els[j], -2) == fp and logEID(plain(els[j])) == first then
        return at(start + j - 1) or false, start + j - 1
      end
    end
    stop = start - 1
  end
  return nil
end

if exact then
  if cur ~= tonumber(string.sub(ctl, 4)) then
    if cur > tonumber(string.sub(ctl, 4)) then found, from = lookup() end
    if found then return '2 ' .. from .. ' ' .. table.concat(found, ' ') end
    return '0 ' .. cur
  end
elseif cur > 0 then
  found, from = lookup()
  if found then return '2 ' .. from .. ' ' .. table.concat(found, ' ') end
  if found == false then return '0 ' .. cur end -- a partial match
elseif string.byte(ctl, 2) == 120 then
  return '0 0' -- stream exists, and it does not
end

-- An index element is the log ID and the event UUID's last two bytes
-- (bytes 15 and 16 of the header).
if k == 1 then
  local h = ARGV[3]
  if not exact then h = string.sub(h, 1, 16) .. (cur + 1) .. string.sub(h, 17) end
  local id = redis.call('XADD', log, '*', 'h2', h, 'd', ARGV[4])
  local ok = redis.pcall('RPUSH', idx, id .. string.sub(h, 15, 16))
  if type(ok) == 'table' and ok.err then
    redis.pcall('XDEL', log, id)
    return redis.error_reply('append undone: ' .. tostring(ok.err))
  end
  return '1 ' .. (cur + 1) .. ' ' .. id
end
local ids, els = {}, {}
local function undo(err)
  for j = 1, #ids do redis.pcall('XDEL', log, ids[j]) end
  return redis.error_reply('append undone: ' .. tostring(err))
end
for i = 1, k do
  local h = ARGV[1 + 2 * i]
  if not exact then h = string.sub(h, 1, 16) .. (cur + i) .. string.sub(h, 17) end
  local id = redis.pcall('XADD', log, '*', 'h2', h, 'd', ARGV[2 + 2 * i])
  if type(id) == 'table' and id.err then return undo(id.err) end
  ids[i], els[i] = id, id .. string.sub(h, 15, 16)
end
local ok = redis.pcall('RPUSH', idx, unpack(els))
if type(ok) == 'table' and ok.err then return undo(ok.err) end
return '1 ' .. (cur + 1) .. ' ' .. table.concat(ids, ' ')
