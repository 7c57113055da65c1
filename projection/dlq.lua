#!lua flags=allow-oom
-- dlq.lua: mirror a quarantined event into the projection's dead-letter
-- stream and acknowledge it, or remove the mirror once it is resolved.
-- PostgreSQL's held_events table is the truth; this keeps Redis in step,
-- idempotently, so a crash between the PostgreSQL commit and this script
-- neither loses nor doubles an entry when it runs again.
--
-- allow-oom: a full Redis still runs this script, so a quarantine while
-- appends are refused does not stall the partition on its mirror. It adds
-- one small entry per quarantined event.
--
-- KEYS[1]  partition log      <ns>:{<cat>:<p>}:log
-- KEYS[2]  dead-letter stream <ns>:{<cat>:<p>}:dlq:<projection>
-- KEYS[3]  its index (hash: log ID -> dead-letter entry ID)
-- ARGV[1]  "add" or "remove"
-- ARGV[2]  consumer group (the projection)
-- ARGV[3]  the quarantined entry's log ID
-- ARGV[4..] for "add": field/value pairs of the dead-letter entry
--
-- Returns the dead-letter entry ID ("add"), or 1/0 ("remove").
local log, dlq, idx = KEYS[1], KEYS[2], KEYS[3]
local mode, group, orig = ARGV[1], ARGV[2], ARGV[3]
if mode == 'add' then
  local id = redis.call('HGET', idx, orig)
  if id == false then
    local fields = {}
    for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
    id = redis.call('XADD', dlq, '*', unpack(fields))
    redis.call('HSET', idx, orig, id)
  end
  redis.pcall('XACK', log, group, orig)
  return id
end
local id = redis.call('HGET', idx, orig)
if id == false then return 0 end
redis.call('XDEL', dlq, id)
redis.call('HDEL', idx, orig)
return 1
