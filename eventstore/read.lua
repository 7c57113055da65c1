#!lua flags=no-writes
-- read.lua: one page of an aggregate's events in one round trip: the IDs
-- from its index, then each entry from the partition log (both keys share
-- the slot {cat:p}).
--
-- KEYS[1]  aggregate index   <ns>:{<cat>:<p>}:agg:<id>
-- KEYS[2]  partition log     <ns>:{<cat>:<p>}:log
-- ARGV[1]  the first version of the page (1-based)
-- ARGV[2]  the most events to return
--
-- Returns one element per version, in order: the log entry {id, fields}
-- as XRANGE gives it, or {id} when the index names an entry the log no
-- longer has (the reader reports it; nothing is skipped).
local from, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local els = redis.call('LRANGE', KEYS[1], from - 1, from + n - 2)
local out = {}
for i = 1, #els do
  -- An element is the log ID and a two-byte fingerprint (append.lua).
  local id = string.sub(els[i], 1, -3)
  local e = redis.call('XRANGE', KEYS[2], id, id)[1]
  if e then out[i] = e else out[i] = {id} end
end
return out
