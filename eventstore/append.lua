#!lua
-- append.lua: atomically append events to the index of aggregates of one
-- partition and to its log (all keys share the slot {cat:p}). One call
-- carries one or more appends, each with its own expected version, each
-- applied or refused on its own, in order; concurrent appends to a
-- partition share a call (docs/architecture.md, "Appending"). Format 2
-- (docs/format.md).
--
-- KEYS[1]   partition log     <ns>:{<cat>:<p>}:log   stream, fields h2 and d
-- KEYS[2]   partition meta    <ns>:{<cat>:<p>}:meta
-- KEYS[2+j] the j-th append's aggregate index <ns>:{<cat>:<p>}:agg:<id>:
--           a list, element i is version i+1: its log ID followed by the
--           last two bytes of its event UUID (a fingerprint: a retry is
--           looked for without reading the log)
-- ARGV[1]   the partition meta the writer expects: "<namespace identity>/<partitions>"
-- ARGV[2]   "C": create the partition meta if it is missing and the log
--           holds no entry (the writer has just checked the namespace
--           identity); "-": a missing meta key refuses the call
-- then, per append:
--   control, three parts:
--     [1] expected version kind: "e" exact, "a" any, "x" stream exists
--     [2] "R": a re-send (any/exists): look for these events in the
--         aggregate back to the bound; "-": compare the last k events if
--         the aggregate's newest is not older than the bound
--     [3..] "e": the expected version; "a"/"x": the bound, the lowest log
--         millisecond the original append can have (0: none)
--   k, the number of events
--   two per event: its h2 header and its data. With "e" the header is
--   whole ("<eid16><version> <type>\0<agg>\0<meta>"); otherwise it lacks
--   the version, which this script puts after the UUID.
--
-- Returns a string, one line per append, in order:
--   "1 <first version> <id_1> .. <id_k>"  appended
--   "2 <first version> <id_1> .. <id_k>"  already appended: an idempotent retry
--   "0 <actual version>"                  conflict
--   "4 <error>"                           a write failed; this append undone
-- or, for the whole call, "3 <meta>": the partition meta is missing ("3 ")
-- or another one; nothing written.
--
-- Guards I1: every ID comes from XADD <log> * (Redis keeps last_generated_id,
--            so IDs stay monotonic when the clock goes back).
--        I2: all k events of an append land in the log and the index or
--            none does: a failed write undoes the append's earlier writes
--            before the next append runs.
--        I3: each version check and its writes run in one script.
--        I4: an append whose event UUIDs already sit at the versions it
--            expected (exact), after its bound (a re-send) or at the end of
--            the aggregate (any, exists) returns the original IDs instead
--            of writing again.
--        A partition never takes events for another namespace incarnation
--        or partition count than it was created with.
--
-- The common path (the version matches, nothing to look for) defines no
-- function and makes, per call, one GET and, per append, LLEN, XADD per
-- event and one RPUSH; what only a retry needs is defined when one needs it.
local log, meta = KEYS[1], KEYS[2]
local have = redis.call('GET', meta)
if have ~= ARGV[1] then
  if have == false and ARGV[2] == 'C' and redis.call('XLEN', log) == 0 then
    redis.call('SET', meta, ARGV[1])
  else
    return '3 ' .. (have or '')
  end
end

local lookup -- the original of a retry: its IDs and first version
local function define()
  -- The event UUID of a header: its first 16 bytes; the last two of them
  -- are the fingerprint an index element ends with.
  local function eid(h) return string.sub(h, 1, 16) end
  local function logEID(id)
    local e = redis.call('XRANGE', log, id, id)[1]
    if e == nil then return nil end
    return eid(e[2][2])
  end
  local function plain(el) return string.sub(el, 1, -3) end
  local function ms(el) return tonumber(string.sub(el, 1, string.find(el, '-', 1, true) - 1)) end
  -- The original IDs if the events at versions v..v+k-1 are this batch's
  -- (headers from ARGV[b]).
  local function at(idx, b, k, cur, v)
    if v < 1 or v + k - 1 > cur then return nil end
    local els = redis.call('LRANGE', idx, v - 1, v + k - 2)
    local ids = {}
    for i = 1, k do
      local want = eid(ARGV[b + 2 * (i - 1)])
      if string.sub(els[i], -2) ~= string.sub(want, -2) then return nil end
      ids[i] = plain(els[i])
      if logEID(ids[i]) ~= want then return nil end
    end
    return ids
  end
  return function(idx, ctl, b, k, cur)
    if string.byte(ctl, 1) == 101 then
      local v = tonumber(string.sub(ctl, 3)) + 1
      return at(idx, b, k, cur, v), v
    end
    local bound = tonumber(string.sub(ctl, 3))
    if string.byte(ctl, 2) ~= 82 then
      -- Not a known re-send: the last k events, if the newest has this
      -- batch's last fingerprint and is recent enough to be the original.
      if cur < k then return nil end
      local last = redis.call('LINDEX', idx, -1)
      if string.sub(last, -2) ~= string.sub(eid(ARGV[b + 2 * (k - 1)]), -2) or ms(last) < bound then return nil end
      return at(idx, b, k, cur, cur - k + 1), cur - k + 1
    end
    -- A re-send: walk the index back from the end, a page at a time, to
    -- the bound.
    local first = eid(ARGV[b])
    local fp = string.sub(first, -2)
    local stop = cur
    while stop >= 1 do
      local start = math.max(1, stop - 255)
      local els = redis.call('LRANGE', idx, start - 1, stop - 1)
      for j = #els, 1, -1 do
        if ms(els[j]) < bound then return nil end
        if string.sub(els[j], -2) == fp and logEID(plain(els[j])) == first then
          return at(idx, b, k, cur, start + j - 1) or false, start + j - 1
        end
      end
      stop = start - 1
    end
    return nil
  end
end

local out = {}
local b = 3 -- ARGV index of the current append's control
for j = 3, #KEYS do
  local idx, ctl, k = KEYS[j], ARGV[b], tonumber(ARGV[b + 1])
  local h1 = b + 2 -- its first header
  b = h1 + 2 * k
  local kind = string.byte(ctl, 1)
  local exact = kind == 101
  local cur = redis.call('LLEN', idx)
  local res
  if exact then
    local want = tonumber(string.sub(ctl, 3))
    if cur ~= want then
      local found, from
      if cur > want then
        lookup = lookup or define()
        found, from = lookup(idx, ctl, h1, k, cur)
      end
      if found then res = '2 ' .. from .. ' ' .. table.concat(found, ' ') else res = '0 ' .. cur end
    end
  elseif cur > 0 then
    lookup = lookup or define()
    local found, from = lookup(idx, ctl, h1, k, cur)
    if found then res = '2 ' .. from .. ' ' .. table.concat(found, ' ')
    elseif found == false then res = '0 ' .. cur end -- a partial match
  elseif kind == 120 then
    res = '0 0' -- stream exists, and it does not
  end

  if res == nil and k == 1 then
    -- An index element is the log ID and the event UUID's last two bytes
    -- (bytes 15 and 16 of the header).
    local h = ARGV[h1]
    if not exact then h = string.sub(h, 1, 16) .. (cur + 1) .. string.sub(h, 17) end
    local id = redis.pcall('XADD', log, '*', 'h2', h, 'd', ARGV[h1 + 1])
    if type(id) == 'table' and id.err then
      res = '4 ' .. tostring(id.err)
    else
      local ok = redis.pcall('RPUSH', idx, id .. string.sub(h, 15, 16))
      if type(ok) == 'table' and ok.err then
        redis.pcall('XDEL', log, id)
        res = '4 append undone: ' .. tostring(ok.err)
      else
        res = '1 ' .. (cur + 1) .. ' ' .. id
      end
    end
  elseif res == nil then
    local ids, els = {}, {}
    for i = 1, k do
      local h = ARGV[h1 + 2 * (i - 1)]
      if not exact then h = string.sub(h, 1, 16) .. (cur + i) .. string.sub(h, 17) end
      local id = redis.pcall('XADD', log, '*', 'h2', h, 'd', ARGV[h1 + 2 * i - 1])
      if type(id) == 'table' and id.err then res = id.err break end
      ids[i], els[i] = id, id .. string.sub(h, 15, 16)
    end
    if res == nil then
      local ok = redis.pcall('RPUSH', idx, unpack(els))
      if type(ok) == 'table' and ok.err then res = ok.err end
    end
    if res ~= nil then
      for i = 1, #ids do redis.pcall('XDEL', log, ids[i]) end
      res = '4 append undone: ' .. tostring(res)
    else
      res = '1 ' .. (cur + 1) .. ' ' .. table.concat(ids, ' ')
    end
  end
  out[j - 2] = res
end
return table.concat(out, '\n')
