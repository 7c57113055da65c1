#!lua flags=allow-oom
-- heartbeat.lua: live workers of one projection, for a fair share of its
-- partitions. Uses the Redis server clock only.
--
-- allow-oom: a full Redis still runs this script, so the fair share keeps
-- working while appends are refused. It writes one sorted-set member.
--
-- KEYS[1]  <ns>:{proj:<projection>}:workers  (sorted set: worker -> expiry ms)
-- ARGV[1]  worker ID
-- ARGV[2]  TTL in milliseconds
-- ARGV[3]  "beat" or "leave"
--
-- Returns the number of live workers after the call.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
end
return redis.call('ZCARD', KEYS[1])
