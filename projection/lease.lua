#!lua flags=allow-oom
-- lease.lua: ownership of one (projection, partition) by one worker.
--
-- allow-oom: a full Redis (used memory > maxmemory, noeviction) still runs
-- this script, so leases are kept, taken and released while appends are
-- refused and the projections drain the log. It writes one small string.
-- (The rebuild lock is taken with a plain SET instead: a rebuild must not
-- start on a full Redis.)
--
-- KEYS[1]  lease key  <ns>:{<cat>:<p>}:lease:<projection>
-- ARGV[1]  worker ID
-- ARGV[2]  TTL in milliseconds
-- ARGV[3]  "acquire" (take it if free or ours), "renew" (extend if ours),
--          "release" (delete if ours)
--
-- Returns 1 when the worker holds (or, for release, held) the lease, else 0.
-- Guards: one owner per partition at a time; a worker never extends or
-- drops a lease it no longer holds.
local cur = redis.call('GET', KEYS[1])
local mode = ARGV[3]
if mode == 'acquire' then
  if cur == false then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
  end
end
if cur ~= ARGV[1] then return 0 end
if mode == 'release' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
