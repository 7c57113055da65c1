#!lua flags=no-writes
-- read_aggregate.lua: one page of an aggregate's events, in version order.
-- The aggregate stream holds only IDs and event UUIDs; the events themselves
-- are read from the partition log under the same IDs (one copy of each
-- event in Redis).
--
-- KEYS[1]  aggregate stream  <ns>:{<cat>:<p>}:agg:<id>
-- KEYS[2]  partition log     <ns>:{<cat>:<p>}:log
-- ARGV[1]  start: "-" or an exclusive "(<id>"
-- ARGV[2]  entries to skip first (fromVersion - 1 on the first page)
-- ARGV[3]  page size
--
-- Returns a list of log entries {id, {field, value, ...}}; an entry whose
-- log copy is gone comes back as {id, false}. Read-only: runs on replicas.
local agg, log = KEYS[1], KEYS[2]
local start, skip, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

while skip > 0 do
  local n = skip
  if n > 10000 then n = 10000 end
  local rows = redis.call('XRANGE', agg, start, '+', 'COUNT', n)
  if #rows == 0 then return {} end
  start = '(' .. rows[#rows][1]
  skip = skip - #rows
end

local out = {}
for _, row in ipairs(redis.call('XRANGE', agg, start, '+', 'COUNT', count)) do
  local id = row[1]
  local e = redis.call('XRANGE', log, id, id)
  if #e == 1 then out[#out + 1] = e[1] else out[#out + 1] = {id, false} end
end
return out
